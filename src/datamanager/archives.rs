//! Workspace archives (`save_to_workspace` / `restore_workspace`): the tar a task step
//! saved, fetched by later tasks of the same run.
//!
//! [`ArchiveStore`] owns the `archives/<task>/<step>.tar` layout over [`Blobs`]. It stores
//! and streams opaque bytes; what goes into a tar and where it is unpacked is the executor's
//! business. An archive is written once per step (a re-upload replaces it atomically).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;

use super::blobs::{BlobError, Blobs, ByteStream, key_segment};

const ARCHIVES_PREFIX: &str = "archives/";

/// A workspace archive found by [`ArchiveStore::get`].
pub struct Archive {
    /// Its size in bytes (for Content-Length).
    pub size: u64,
    /// Its content.
    pub data: ByteStream,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Workspace archives over [`Blobs`]. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    blobs: Blobs,
}

impl ArchiveStore {
    /// Archives in `blobs`.
    pub fn new(blobs: Blobs) -> ArchiveStore {
        ArchiveStore { blobs }
    }

    /// Stores the archive of step `step` of task `task_id` from a stream (never held whole
    /// in memory), replacing any previous one atomically. Returns its size.
    pub async fn put<S, E>(&self, task_id: &str, step: usize, data: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.blobs.put_stream(&key(task_id, step), data).await
    }

    /// The archive of step `step` of task `task_id`, or `None` when it was never saved.
    pub async fn get(&self, task_id: &str, step: usize) -> Result<Option<Archive>, BlobError> {
        let key = key(task_id, step);
        let Some(meta) = self.blobs.head(&key).await? else {
            return Ok(None);
        };
        match self.blobs.get(&key).await {
            Ok(data) => Ok(Some(Archive {
                size: meta.size,
                data,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes every archive of a task; returns how many there were.
    pub async fn delete_task(&self, task_id: &str) -> Result<usize, BlobError> {
        self.blobs.delete_prefix(&task_prefix(task_id)).await
    }

    /// Deletes archives written before `older_than`; returns how many.
    pub async fn expire(&self, older_than: DateTime<Utc>) -> Result<usize, BlobError> {
        self.blobs
            .delete_older_than(ARCHIVES_PREFIX, older_than)
            .await
    }
}

fn task_prefix(task_id: &str) -> String {
    format!("{ARCHIVES_PREFIX}{}/", key_segment(task_id))
}

fn key(task_id: &str, step: usize) -> String {
    format!("{}{step}.tar", task_prefix(task_id))
}

#[cfg(test)]
mod tests {
    use super::super::blobs::testing::{backends, collect, pieces, put_newer_than};
    use super::*;

    #[tokio::test]
    async fn a_stored_archive_comes_back_whole_with_its_size() {
        let tar: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        for be in backends() {
            let archives = ArchiveStore::new(be.blobs.clone());
            let size = archives
                .put("task-a", 2, pieces(&tar, 4096))
                .await
                .expect("put");
            assert_eq!(size, tar.len() as u64);
            let archive = archives
                .get("task-a", 2)
                .await
                .expect("get")
                .expect("found");
            assert_eq!(archive.size, tar.len() as u64, "{}", be.name);
            assert!(collect(archive.data).await == tar);
            assert!(
                be.blobs
                    .head("archives/task-a/2.tar")
                    .await
                    .expect("head")
                    .is_some()
            );
        }
    }

    #[tokio::test]
    async fn a_missing_archive_is_none_and_a_new_upload_replaces_the_old() {
        for be in backends() {
            let archives = ArchiveStore::new(be.blobs.clone());
            assert!(archives.get("task-a", 0).await.expect("get").is_none());
            archives
                .put("task-a", 0, pieces(b"v1", 1))
                .await
                .expect("put");
            archives
                .put("task-a", 0, pieces(b"v2!", 1))
                .await
                .expect("put again");
            let archive = archives
                .get("task-a", 0)
                .await
                .expect("get")
                .expect("found");
            assert_eq!(collect(archive.data).await, b"v2!", "{}", be.name);
        }
    }

    #[tokio::test]
    async fn deleting_a_task_removes_only_its_archives() {
        for be in backends() {
            let archives = ArchiveStore::new(be.blobs.clone());
            for (task, step) in [("t1", 0), ("t1", 3), ("t10", 0)] {
                archives
                    .put(task, step, pieces(b"x", 1))
                    .await
                    .expect("put");
            }
            assert_eq!(archives.delete_task("t1").await.expect("delete"), 2);
            assert!(
                archives.get("t1", 3).await.expect("get").is_none(),
                "{}",
                be.name
            );
            assert!(archives.get("t10", 0).await.expect("get").is_some());
            assert_eq!(archives.delete_task("t1").await.expect("again"), 0);
        }
    }

    #[tokio::test]
    async fn expire_deletes_archives_written_before_the_cutoff() {
        for be in backends() {
            let archives = ArchiveStore::new(be.blobs.clone());
            archives.put("old", 0, pieces(b"x", 1)).await.expect("put");
            let old = be
                .blobs
                .head(&key("old", 0))
                .await
                .expect("head")
                .expect("exists");
            let new = put_newer_than(&be.blobs, &key("new", 0), b"y", old.last_modified).await;
            assert_eq!(archives.expire(new.last_modified).await.expect("expire"), 1);
            assert!(
                archives.get("old", 0).await.expect("get").is_none(),
                "{}",
                be.name
            );
            assert!(archives.get("new", 0).await.expect("get").is_some());
        }
    }

    #[tokio::test]
    async fn an_empty_task_id_is_an_invalid_key_not_a_panic() {
        let archives = ArchiveStore::new(Blobs::open("memory:").expect("memory"));
        let err = archives
            .put("", 0, pieces(b"x", 1))
            .await
            .expect_err("empty id");
        assert!(matches!(err, BlobError::InvalidKey { .. }), "{err}");
    }
}

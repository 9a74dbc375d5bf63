//! Object storage for Cairn's big data: step logs, workspace archives, caches, exports.
//!
//! [`Blobs`] is a cheap, cloneable handle over one [`ObjectStore`] chosen by URL: a local
//! directory (the default), `memory:` (tests) or `s3://bucket/prefix` (cargo feature `s3`).
//! It owns the generic object operations and their guarantees — atomic puts, streaming
//! uploads that never buffer a whole object, first-writer-wins creation, ordered string-prefix
//! listings — and knows nothing of what the objects mean: the key layouts live in
//! [`super::logs`], [`super::caches`] and [`super::archives`].
//!
//! Keys are `/`-separated strings whose segments are valid [`object_store::path::Path`] parts;
//! callers that put untrusted text into a key encode it with [`key_segment`] first. A key
//! must never be both an object and the directory of others (`a` and `a/b`): a local
//! directory store cannot hold both, so layouts keep objects and directories apart.
//! Prefixes are plain string prefixes of keys (`caches/proj-go` matches
//! `caches/proj-go-1234`), not directory names.
//!
//! Opening by URL lives in `open.rs`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::{Path, PathPart};
use object_store::{
    GetOptions, GetRange, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload,
};

mod open;

/// Size of one part of a streaming upload; smaller objects go up in one atomic put.
/// 5 MiB is S3's minimum part size.
const PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of one streaming upload in flight at once (bounds memory to this many parts).
const UPLOAD_CONCURRENCY: usize = 2;

/// Where streaming creates stage their data before it is linked into place.
const STAGING_PREFIX: &str = "_staging/";

/// What went wrong with an object-store operation.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The object does not exist.
    #[error("object {key:?} not found")]
    NotFound { key: String },
    /// The key is not a valid object key (empty segment, `.`/`..`, control characters, …).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// The object-store URL (or one of its options) cannot be used by this build.
    #[error("cannot open object store {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// A read asked for bytes past the end of the object.
    #[error("offset {offset} is past the end of object {key:?} ({size} bytes)")]
    OffsetPastEnd { key: String, offset: u64, size: u64 },
    /// The stream being uploaded failed; nothing was stored.
    #[error("upload of {key:?} aborted: its source failed: {source}")]
    Source {
        key: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The local directory of a file store could not be created.
    #[error("cannot create object store directory {path:?}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    /// The backend failed.
    #[error("object store {op} of {key:?} failed: {source}")]
    Store {
        op: &'static str,
        key: String,
        source: object_store::Error,
    },
}

impl BlobError {
    /// True when the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BlobError::NotFound { .. })
    }

    fn store(op: &'static str, key: &str, source: object_store::Error) -> BlobError {
        match source {
            object_store::Error::NotFound { .. } => BlobError::NotFound {
                key: key.to_owned(),
            },
            source => BlobError::Store {
                op,
                key: key.to_owned(),
                source,
            },
        }
    }
}

/// What the store knows about one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Size in bytes.
    pub size: u64,
    /// When the object was (last) written.
    pub last_modified: DateTime<Utc>,
}

impl From<&ObjectMeta> for Meta {
    fn from(meta: &ObjectMeta) -> Meta {
        Meta {
            size: meta.size,
            last_modified: meta.last_modified,
        }
    }
}

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// Encodes arbitrary text as one key segment: `/`, `%`, `#`, control characters and the
/// characters object stores dislike are percent-encoded, `.` and `..` are escaped. The
/// encoding keeps string prefixes: a prefix of the text encodes to a prefix of the segment.
pub fn key_segment(text: &str) -> String {
    PathPart::from(text).as_ref().to_owned()
}

/// A handle on one object store. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blobs({})", self.store)
    }
}

impl Blobs {
    /// Wraps an already built store (tests, failure injection, custom backends).
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Blobs {
        Blobs { store }
    }

    /// Stores `data` at `key`, replacing any object there. Atomic: readers see the old
    /// object or the whole new one, never a part.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), BlobError> {
        let path = parse_key(key)?;
        self.store
            .put(&path, PutPayload::from(data))
            .await
            .map_err(|e| BlobError::store("put", key, e))?;
        Ok(())
    }

    /// Stores `data` at `key` only if no object is there. Returns whether this call created
    /// it: of concurrent writers exactly one gets `true`, and the object is its data.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, BlobError> {
        let path = parse_key(key)?;
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&path, PutPayload::from(data.clone()), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented) => {
                // A backend without conditional puts: stage and link, which every backend
                // Cairn opens supports.
                self.put_stream_if_absent(key, stream::iter([Ok::<_, BlobError>(data)]))
                    .await
            }
            Err(e) => Err(BlobError::store("put", key, e)),
        }
    }

    /// Uploads a stream to `key` without holding the whole object in memory (parts of
    /// 5 MiB), replacing any object there, and returns its size. Atomic: the object
    /// appears only when the stream ended cleanly; if the stream fails nothing is stored.
    pub async fn put_stream<S, E>(&self, key: &str, data: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = parse_key(key)?;
        let mut data = pin!(data);
        let source = |e: E| BlobError::Source {
            key: key.to_owned(),
            source: e.into(),
        };

        // Small objects (the common case for logs) go up in one put.
        let mut first: Vec<Bytes> = Vec::new();
        let mut first_len = 0usize;
        let mut more = None;
        while let Some(item) = data.next().await {
            let chunk = item.map_err(source)?;
            if first_len + chunk.len() > PART_SIZE {
                more = Some(chunk);
                break;
            }
            first_len += chunk.len();
            first.push(chunk);
        }
        let Some(overflow) = more else {
            let payload: PutPayload = first.into_iter().collect();
            self.store
                .put(&path, payload)
                .await
                .map_err(|e| BlobError::store("put", key, e))?;
            return Ok(first_len as u64);
        };

        let mut upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| BlobError::store("put_multipart", key, e))?;
        let mut parts = Parts::default();
        let store_error = |e| BlobError::store("put_multipart", key, e);
        let outcome = async {
            for chunk in first.into_iter().chain([overflow]) {
                parts.add(&mut *upload, chunk).await.map_err(store_error)?;
            }
            while let Some(item) = data.next().await {
                let chunk = item.map_err(source)?;
                parts.add(&mut *upload, chunk).await.map_err(store_error)?;
            }
            parts.flush(&mut *upload).await.map_err(store_error)?;
            upload.complete().await.map_err(store_error)?;
            Ok(parts.total)
        }
        .await;
        if outcome.is_err() {
            // Stop the parts still in flight, then give up the upload so that no part is
            // left stored; the caller gets the original error.
            parts.in_flight.shutdown().await;
            if let Err(error) = upload.abort().await {
                tracing::warn!(key, error = %error, "aborting a failed upload left parts behind");
            }
        }
        outcome
    }

    /// Uploads a stream to `key` only if no object is there, returning whether this call
    /// created it (first writer wins; a loser's data is discarded). The stream is staged
    /// under `_staging/` and linked into place with copy-if-not-exists.
    pub async fn put_stream_if_absent<S, E>(&self, key: &str, data: S) -> Result<bool, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = parse_key(key)?;
        if self.head(key).await?.is_some() {
            return Ok(false);
        }
        let staging = format!("{STAGING_PREFIX}{}", unique_name());
        self.put_stream(&staging, data).await?;
        let staged = parse_key(&staging)?;
        let linked = match self.store.copy_if_not_exists(&staged, &path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(BlobError::store("copy_if_not_exists", key, e)),
        };
        self.delete(&staging).await?;
        linked
    }

    /// Streams the whole object at `key`.
    pub async fn get(&self, key: &str) -> Result<ByteStream, BlobError> {
        let path = parse_key(key)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| BlobError::store("get", key, e))?;
        Ok(result_stream(key, result))
    }

    /// Streams the object at `key` from byte `from_offset` to its end. An offset equal to the
    /// size gives an empty stream; a larger one is [`BlobError::OffsetPastEnd`].
    pub async fn get_range(&self, key: &str, from_offset: u64) -> Result<ByteStream, BlobError> {
        if from_offset == 0 {
            return self.get(key).await;
        }
        let path = parse_key(key)?;
        let Some(meta) = self.head(key).await? else {
            return Err(BlobError::NotFound {
                key: key.to_owned(),
            });
        };
        if from_offset == meta.size {
            return Ok(stream::empty().boxed());
        }
        if from_offset > meta.size {
            return Err(BlobError::OffsetPastEnd {
                key: key.to_owned(),
                offset: from_offset,
                size: meta.size,
            });
        }
        let opts = GetOptions {
            range: Some(GetRange::Offset(from_offset)),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&path, opts)
            .await
            .map_err(|e| BlobError::store("get", key, e))?;
        Ok(result_stream(key, result))
    }

    /// Reads bytes `offset..offset + len` of the object at `key` into memory, in one ranged
    /// request: exactly `len` bytes, or an error. A range reaching past the object's end is
    /// [`BlobError::OffsetPastEnd`] (naming the end asked for), never a shorter answer; a
    /// `len` of 0 reads nothing but still needs the object and an offset within it.
    pub async fn get_range_bounded(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, BlobError> {
        let path = parse_key(key)?;
        let end = match offset.checked_add(len) {
            Some(end) if len > 0 => end,
            _ => {
                let end = offset.saturating_add(len);
                return self.past_end(key, end).await.map(|()| Bytes::new());
            }
        };
        let opts = GetOptions {
            range: Some(GetRange::Bounded(offset..end)),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&path, opts).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BlobError::NotFound {
                    key: key.to_owned(),
                });
            }
            // A range starting past the end is the backend's error: say which.
            Err(e) => {
                self.past_end(key, end).await?;
                return Err(BlobError::store("get", key, e));
            }
        };
        let size = result.meta.size;
        let short = BlobError::OffsetPastEnd {
            key: key.to_owned(),
            offset: end,
            size,
        };
        // Backends clamp a range reaching past the end; this method never does.
        if result.range != (offset..end) {
            return Err(short);
        }
        let bytes = result
            .bytes()
            .await
            .map_err(|e| BlobError::store("get", key, e))?;
        if bytes.len() as u64 != len {
            return Err(short);
        }
        Ok(bytes)
    }

    /// `Ok` when the object at `key` exists and `end` is within it; else why not.
    async fn past_end(&self, key: &str, end: u64) -> Result<(), BlobError> {
        match self.head(key).await? {
            None => Err(BlobError::NotFound {
                key: key.to_owned(),
            }),
            Some(meta) if end > meta.size => Err(BlobError::OffsetPastEnd {
                key: key.to_owned(),
                offset: end,
                size: meta.size,
            }),
            Some(_) => Ok(()),
        }
    }

    /// Reads the whole object at `key` into memory (for small objects: markers, tests).
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, BlobError> {
        let path = parse_key(key)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| BlobError::store("get", key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| BlobError::store("get", key, e))
    }

    /// The object's size and modification time, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<Meta>, BlobError> {
        let path = parse_key(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(Meta::from(&meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BlobError::store("head", key, e)),
        }
    }

    /// All objects whose key starts with `prefix`, ordered by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Meta)>, BlobError> {
        // object_store lists by directory; narrow to the prefix's directory, then filter.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let dir_path = if dir.is_empty() {
            None
        } else {
            Some(parse_key(dir)?)
        };
        let mut listing = self.store.list(dir_path.as_ref());
        let mut found = Vec::new();
        while let Some(item) = listing.next().await {
            match item {
                Ok(meta) => {
                    let key = meta.location.as_ref();
                    if key.starts_with(prefix) && !key.starts_with(STAGING_PREFIX) {
                        found.push((key.to_owned(), Meta::from(&meta)));
                    }
                }
                // Deleted while the listing ran (or the directory never existed).
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BlobError::store("list", prefix, e)),
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// The most recently modified object whose key starts with `prefix` (ties go to the
    /// greatest key), or `None` when there is none.
    pub async fn newest_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<(String, Meta)>, BlobError> {
        Ok(self.list(prefix).await?.into_iter().max_by(|a, b| {
            a.1.last_modified
                .cmp(&b.1.last_modified)
                .then(a.0.cmp(&b.0))
        }))
    }

    /// Deletes the object at `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = parse_key(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(BlobError::store("delete", key, e)),
        }
    }

    /// Deletes every object whose key starts with `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let keys: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.delete_keys(keys).await
    }

    /// Deletes every object under `prefix` last modified strictly before `cutoff`; returns
    /// how many were deleted.
    pub async fn delete_older_than(
        &self,
        prefix: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<usize, BlobError> {
        let keys: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .filter(|(_, meta)| meta.last_modified < cutoff)
            .map(|(k, _)| k)
            .collect();
        self.delete_keys(keys).await
    }

    /// Removes staged uploads older than `cutoff` (left by writers that died mid-upload).
    pub async fn clean_staging(&self, cutoff: DateTime<Utc>) -> Result<usize, BlobError> {
        let mut listing = self.store.list(Some(&Path::from("_staging")));
        let mut stale = Vec::new();
        while let Some(item) = listing.next().await {
            match item {
                Ok(meta) if meta.last_modified < cutoff => {
                    stale.push(meta.location.as_ref().to_owned());
                }
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BlobError::store("list", STAGING_PREFIX, e)),
            }
        }
        self.delete_keys(stale).await
    }

    /// Deletes `keys` (batched where the backend can), in the order given.
    pub async fn delete_keys(&self, keys: Vec<String>) -> Result<usize, BlobError> {
        let count = keys.len();
        let paths = keys
            .iter()
            .map(|k| parse_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        let locations = stream::iter(paths.into_iter().map(Ok)).boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(item) = deleted.next().await {
            match item {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BlobError::store("delete", "(batch)", e)),
            }
        }
        Ok(count)
    }
}

/// The parts of one multipart upload: bytes gathered into parts of exactly `PART_SIZE`
/// (the last one shorter), each sent by its own task, at most `UPLOAD_CONCURRENCY` in
/// flight. Dropping it stops the parts in flight.
#[derive(Default)]
struct Parts {
    pending: Vec<Bytes>,
    pending_len: usize,
    in_flight: tokio::task::JoinSet<object_store::Result<()>>,
    /// Bytes added so far.
    total: u64,
}

impl Parts {
    /// Adds `chunk`, sending each part it completes.
    async fn add(
        &mut self,
        upload: &mut dyn MultipartUpload,
        mut chunk: Bytes,
    ) -> object_store::Result<()> {
        self.total += chunk.len() as u64;
        while self.pending_len + chunk.len() >= PART_SIZE {
            let head = chunk.split_to(PART_SIZE - self.pending_len);
            self.pending.push(head);
            self.send_pending(upload).await?;
        }
        if !chunk.is_empty() {
            self.pending_len += chunk.len();
            self.pending.push(chunk);
        }
        Ok(())
    }

    /// Sends the last part, if any, and waits for every part to be stored.
    async fn flush(&mut self, upload: &mut dyn MultipartUpload) -> object_store::Result<()> {
        if self.pending_len > 0 {
            self.send_pending(upload).await?;
        }
        while let Some(done) = self.in_flight.join_next().await {
            part_result(done)?;
        }
        Ok(())
    }

    /// Sends the gathered bytes as the next part, once fewer than `UPLOAD_CONCURRENCY`
    /// parts are in flight.
    async fn send_pending(&mut self, upload: &mut dyn MultipartUpload) -> object_store::Result<()> {
        while self.in_flight.len() >= UPLOAD_CONCURRENCY {
            if let Some(done) = self.in_flight.join_next().await {
                part_result(done)?;
            }
        }
        let part: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
        self.pending_len = 0;
        // Parts are numbered in the order they are created, here, whatever order they
        // finish in.
        self.in_flight.spawn(upload.put_part(part));
        Ok(())
    }
}

/// A part's outcome; a part task that panicked is an error of the upload.
fn part_result(
    done: Result<object_store::Result<()>, tokio::task::JoinError>,
) -> object_store::Result<()> {
    done.map_err(|e| object_store::Error::Generic {
        store: "Blobs",
        source: Box::new(e),
    })?
}

/// Parses a key into a store path, refusing what would be silently rewritten.
fn parse_key(key: &str) -> Result<Path, BlobError> {
    let invalid = |reason: String| BlobError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() || key.starts_with('/') || key.ends_with('/') || key.contains("//") {
        return Err(invalid(
            "keys are non-empty segments joined by single '/'".to_owned(),
        ));
    }
    Path::parse(key).map_err(|e| invalid(e.to_string()))
}

/// Bytes per blocking read of a local file. `GetResult::into_stream` reads a local file
/// 8 KiB per blocking-pool round trip, which holds log followers and log archiving to
/// ~100–200 MB/s on a small machine.
const FILE_READ_CHUNK: usize = 256 * 1024;

/// The bytes of a get: a local file is read `FILE_READ_CHUNK` at a time.
fn result_stream(key: &str, result: object_store::GetResult) -> ByteStream {
    let object_store::GetResultPayload::File(file, _) = result.payload else {
        return byte_stream(key, result.into_stream());
    };
    let range = result.range;
    let read = stream::once(async move {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(range.start)).await?;
        Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::with_capacity(
            file.take(range.end - range.start),
            FILE_READ_CHUNK,
        ))
    })
    .try_flatten()
    .map_err(|e| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    });
    byte_stream(key, read.boxed())
}

/// Maps a backend byte stream to [`ByteStream`], naming the key in errors.
fn byte_stream(key: &str, inner: BoxStream<'static, object_store::Result<Bytes>>) -> ByteStream {
    let key = key.to_owned();
    inner
        .map_err(move |e| BlobError::store("get", &key, e))
        .boxed()
}

/// A name no other writer (in this process or another) will pick.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = RandomState::new().build_hasher();
    random.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("{nanos:x}-{}-{:016x}", std::process::id(), random.finish())
}

/// Backends and helpers shared by the datamanager's object-storage tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// An open store plus the directory that must outlive it (file backend).
    pub(crate) struct Backend {
        pub(crate) name: &'static str,
        pub(crate) blobs: Blobs,
        pub(crate) _dir: Option<tempfile::TempDir>,
    }

    /// A fresh in-memory store and a fresh `file://` store in a temporary directory.
    pub(crate) fn backends() -> Vec<Backend> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("file://{}", dir.path().display());
        vec![
            Backend {
                name: "memory",
                blobs: Blobs::open("memory:").expect("memory store"),
                _dir: None,
            },
            Backend {
                name: "file",
                blobs: Blobs::open(&url).expect("file store"),
                _dir: Some(dir),
            },
        ]
    }

    /// Collects a byte stream.
    pub(crate) async fn collect<E: std::fmt::Debug>(
        stream: BoxStream<'static, Result<Bytes, E>>,
    ) -> Vec<u8> {
        stream
            .map(|item| item.expect("stream item"))
            .fold(Vec::new(), |mut all, b| async move {
                all.extend_from_slice(&b);
                all
            })
            .await
    }

    /// A stream of `data` cut into `piece`-byte chunks.
    pub(crate) fn pieces(
        data: &[u8],
        piece: usize,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        stream::iter(chunks)
    }

    /// Rewrites `key` until its modification time is strictly after `after` (file systems
    /// stamp times with a coarse clock; this waits for the clock, not for a fixed delay).
    pub(crate) async fn put_newer_than(
        blobs: &Blobs,
        key: &str,
        data: &'static [u8],
        after: DateTime<Utc>,
    ) -> Meta {
        loop {
            blobs.put(key, Bytes::from_static(data)).await.expect("put");
            let meta = blobs.head(key).await.expect("head").expect("just written");
            if meta.last_modified > after {
                return meta;
            }
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests;

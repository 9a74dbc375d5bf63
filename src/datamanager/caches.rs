//! Step caches (`save_cache` / `restore_cache`): tar archives shared across runs of one
//! cache group, stored once per key, first writer wins.
//!
//! [`CacheStore`] owns the `caches/` layout over [`Blobs`] and the rules for cache keys. A
//! full key is already `<cache_prefix>-<user key>` (the executor renders the user's
//! template and the run service adds the group's prefix); this module validates it,
//! encodes it as one object-key segment and never looks inside the archives. A restore by
//! prefix picks the most recently written cache whose key starts with the prefix, as
//! Agola does. Expiry is by age of the object.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;

use super::blobs::{BlobError, Blobs, ByteStream, Meta, key_segment};

/// The longest accepted cache key, in characters.
pub const MAX_KEY_CHARS: usize = 200;

const CACHES_PREFIX: &str = "caches/";

/// What went wrong with a cache operation.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The key is not acceptable; nothing was read or written.
    #[error("invalid cache key {key:?}: {reason}")]
    BadKey { key: String, reason: &'static str },
    /// The object store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// A cache found by [`CacheStore::get`].
pub struct CacheHit {
    /// The full key of the cache found (with a prefix lookup, the one that matched).
    pub key: String,
    /// Its size in bytes (for Content-Length).
    pub size: u64,
    /// When it was saved.
    pub last_modified: DateTime<Utc>,
    /// Its content.
    pub data: ByteStream,
}

impl std::fmt::Debug for CacheHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHit")
            .field("key", &self.key)
            .field("size", &self.size)
            .field("last_modified", &self.last_modified)
            .finish_non_exhaustive()
    }
}

/// Caches over [`Blobs`]. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct CacheStore {
    blobs: Blobs,
}

impl CacheStore {
    /// Caches in `blobs`.
    pub fn new(blobs: Blobs) -> CacheStore {
        CacheStore { blobs }
    }

    /// Whether a cache exists with exactly `key`, or (`prefix`) with a key starting with it.
    pub async fn exists(&self, key: &str, prefix: bool) -> Result<bool, CacheError> {
        Ok(self.find(key, prefix).await?.is_some())
    }

    /// The cache with exactly `key`, or (`prefix`) the newest one whose key starts with it;
    /// `None` when there is none (a missing cache is not an error).
    pub async fn get(&self, key: &str, prefix: bool) -> Result<Option<CacheHit>, CacheError> {
        let Some((found, meta)) = self.find(key, prefix).await? else {
            return Ok(None);
        };
        match self.blobs.get(&object_key(&found)).await {
            Ok(data) => Ok(Some(CacheHit {
                key: found,
                size: meta.size,
                last_modified: meta.last_modified,
                data,
            })),
            // Expired between the lookup and the read.
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Saves a cache under `key` from a stream (never held whole in memory). Returns `true`
    /// when this call created it and `false` when a cache with that key already existed or
    /// another writer got there first; the existing cache is left untouched.
    pub async fn put<S, E>(&self, key: &str, data: S) -> Result<bool, CacheError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        validate_key(key)?;
        Ok(self
            .blobs
            .put_stream_if_absent(&object_key(key), data)
            .await?)
    }

    /// Deletes the cache with exactly `key` (missing is fine).
    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        validate_key(key)?;
        Ok(self.blobs.delete(&object_key(key)).await?)
    }

    /// Deletes caches saved before `older_than`; returns how many.
    pub async fn expire(&self, older_than: DateTime<Utc>) -> Result<usize, CacheError> {
        Ok(self
            .blobs
            .delete_older_than(CACHES_PREFIX, older_than)
            .await?)
    }

    /// The full key and metadata of the cache `key` designates, if any.
    async fn find(&self, key: &str, prefix: bool) -> Result<Option<(String, Meta)>, CacheError> {
        validate_key(key)?;
        let object = object_key(key);
        let found = if prefix {
            self.blobs.newest_with_prefix(&object).await?
        } else {
            self.blobs.head(&object).await?.map(|meta| (object, meta))
        };
        Ok(found.and_then(|(object, meta)| decode_key(&object).map(|key| (key, meta))))
    }
}

/// Checks a full cache key: 1 to [`MAX_KEY_CHARS`] printable characters, no `..`, no
/// leading `/`.
pub fn validate_key(key: &str) -> Result<(), CacheError> {
    let bad = |reason| {
        Err(CacheError::BadKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("it is empty");
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return bad("it is longer than 200 characters");
    }
    if key.contains("..") {
        return bad("it contains `..`");
    }
    if key.starts_with('/') {
        return bad("it starts with `/`");
    }
    if key == "." {
        return bad("it is `.`");
    }
    if key.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    Ok(())
}

fn object_key(key: &str) -> String {
    format!("{CACHES_PREFIX}{}", key_segment(key))
}

/// The cache key of an object under `caches/` (undoing [`key_segment`]).
fn decode_key(object: &str) -> Option<String> {
    let segment = object.strip_prefix(CACHES_PREFIX)?;
    percent_decode(segment)
}

/// Decodes `%XX` escapes; `None` for malformed input or invalid UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::super::blobs::testing::{backends, collect, pieces};
    use super::*;

    fn failed<T>(result: Result<T, CacheError>, what: &str) -> CacheError {
        match result {
            Ok(_) => panic!("{what}: expected an error"),
            Err(e) => e,
        }
    }

    async fn content(caches: &CacheStore, key: &str, prefix: bool) -> Option<(String, Vec<u8>)> {
        let hit = caches.get(key, prefix).await.expect("get")?;
        Some((hit.key, collect(hit.data).await))
    }

    /// Saves `key`, re-saving it until it is strictly newer than `after` (file systems stamp
    /// times with a coarse clock).
    async fn save_newer_than(caches: &CacheStore, key: &str, after: DateTime<Utc>) -> Meta {
        loop {
            assert!(
                caches
                    .put(key, pieces(key.as_bytes(), 4))
                    .await
                    .expect("put")
            );
            let (_, meta) = caches.find(key, false).await.expect("find").expect("saved");
            if meta.last_modified > after {
                return meta;
            }
            caches.delete(key).await.expect("delete");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_saved_cache_is_found_by_its_exact_key() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            let key = "proj-go-mod-abc123";
            assert!(!caches.exists(key, false).await.expect("exists"));
            assert!(caches.put(key, pieces(b"tar bytes", 3)).await.expect("put"));
            assert!(
                caches.exists(key, false).await.expect("exists"),
                "{}",
                be.name
            );
            let hit = caches.get(key, false).await.expect("get").expect("hit");
            assert_eq!(hit.size, 9);
            assert_eq!(hit.key, key);
            assert_eq!(collect(hit.data).await, b"tar bytes");
            assert!(
                !caches
                    .exists("proj-go-mod-abc", false)
                    .await
                    .expect("exact only")
            );
        }
    }

    #[tokio::test]
    async fn the_first_writer_wins_and_a_second_save_leaves_it_untouched() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            assert!(caches.put("k", pieces(b"first", 2)).await.expect("first"));
            assert!(
                !caches
                    .put("k", pieces(b"second!", 2))
                    .await
                    .expect("second")
            );
            let (_, data) = content(&caches, "k", false).await.expect("hit");
            assert_eq!(data, b"first", "{}", be.name);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_saves_of_one_key_have_exactly_one_winner() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            let savers: Vec<_> = (0..5)
                .map(|i| {
                    let caches = caches.clone();
                    tokio::spawn(async move {
                        let data = format!("saved by {i}").into_bytes();
                        (
                            i,
                            caches.put("shared", pieces(&data, 5)).await.expect("put"),
                        )
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for s in savers {
                let (i, created) = s.await.expect("saver");
                if created {
                    winners.push(i);
                }
            }
            assert_eq!(winners.len(), 1, "{}: {winners:?}", be.name);
            let (_, data) = content(&caches, "shared", false).await.expect("hit");
            assert_eq!(data, format!("saved by {}", winners[0]).as_bytes());
        }
    }

    #[tokio::test]
    async fn a_prefix_lookup_returns_the_newest_matching_cache() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            let older = save_newer_than(&caches, "proj-deps-zzz", DateTime::<Utc>::MIN_UTC).await;
            let newer = save_newer_than(&caches, "proj-deps-aaa", older.last_modified).await;
            save_newer_than(&caches, "proj-other", newer.last_modified).await;
            save_newer_than(&caches, "other-deps-x", newer.last_modified).await;
            let (key, data) = content(&caches, "proj-deps-", true).await.expect("hit");
            assert_eq!(key, "proj-deps-aaa", "{}", be.name);
            assert_eq!(data, b"proj-deps-aaa");
            assert!(caches.exists("proj-deps", true).await.expect("exists"));
            assert!(!caches.exists("proj-deps", false).await.expect("exists"));
        }
    }

    #[tokio::test]
    async fn a_missing_cache_is_none_not_an_error() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            assert!(caches.get("nope", false).await.expect("get").is_none());
            assert!(caches.get("nope", true).await.expect("get").is_none());
            assert!(
                !caches.exists("nope", true).await.expect("exists"),
                "{}",
                be.name
            );
        }
    }

    #[tokio::test]
    async fn keys_with_slashes_hashes_and_spaces_round_trip_and_match_by_prefix() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            let key = "grp/proj-node modules#1 50%";
            assert!(caches.put(key, pieces(b"nm", 1)).await.expect("put"));
            let (found, data) = content(&caches, "grp/proj-node mod", true)
                .await
                .expect("hit");
            assert_eq!(found, key, "{}", be.name);
            assert_eq!(data, b"nm");
            assert!(caches.exists(key, false).await.expect("exists"));
            // The key is one object: nothing was created outside `caches/`.
            let all = be.blobs.list("").await.expect("list");
            assert_eq!(all.len(), 1);
            assert!(all[0].0.starts_with("caches/grp%2Fproj"), "{all:?}");
        }
    }

    #[tokio::test]
    async fn bad_keys_are_refused() {
        let long = "k".repeat(MAX_KEY_CHARS + 1);
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            for key in [
                "",
                "/abs",
                "a/../b",
                "..",
                ".",
                "tab\there",
                "nl\n",
                long.as_str(),
            ] {
                let err = failed(caches.put(key, pieces(b"x", 1)).await, key);
                assert!(matches!(err, CacheError::BadKey { .. }), "{key:?}: {err}");
                let err = failed(caches.exists(key, true).await, key);
                assert!(matches!(err, CacheError::BadKey { .. }), "{key:?}: {err}");
            }
            assert!(
                be.blobs.list("").await.expect("list").is_empty(),
                "{}",
                be.name
            );
            let longest = "k".repeat(MAX_KEY_CHARS);
            assert!(
                caches
                    .put(&longest, pieces(b"x", 1))
                    .await
                    .expect("200 chars")
            );
        }
    }

    #[tokio::test]
    async fn expire_deletes_caches_saved_before_the_cutoff_only() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            let old = save_newer_than(&caches, "old-1", DateTime::<Utc>::MIN_UTC).await;
            let new = save_newer_than(&caches, "new-1", old.last_modified).await;
            be.blobs
                .put("archives/t/0.tar", Bytes::from_static(b"not a cache"))
                .await
                .expect("put");
            assert_eq!(caches.expire(new.last_modified).await.expect("expire"), 1);
            assert!(
                !caches.exists("old-1", false).await.expect("exists"),
                "{}",
                be.name
            );
            assert!(caches.exists("new-1", false).await.expect("exists"));
            assert!(
                be.blobs
                    .head("archives/t/0.tar")
                    .await
                    .expect("head")
                    .is_some()
            );
        }
    }

    #[test]
    fn percent_decoding_undoes_key_segment() {
        for key in ["plain", "a/b", "x#1 %y", "ünï/cödé", "100%"] {
            assert_eq!(percent_decode(&key_segment(key)).as_deref(), Some(key));
        }
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("cut%4"), None);
    }
}

//! Step caches (`save_cache` / `restore_cache`): tar archives shared across runs of one
//! cache group, stored once per key, first writer wins.
//!
//! [`CacheStore`] owns the `caches/` layout over [`Blobs`] and the rules for cache keys. A
//! full key is `<namespace>/<user key>`: the namespace is the lowercase hex id of the
//! task's cache group (`runservice::cache_namespace`, handed to the executor as its cache
//! prefix) and the user key is the executor's rendering of the config's template. Each
//! namespace is its own directory, `caches/<namespace>/<user key as one segment>`, so a
//! lookup, even by prefix, never leaves its group: `app`'s restore of `web-` cannot reach
//! `app-web`'s caches. This module validates keys, encodes them and never looks inside
//! the archives. A restore by prefix picks the most recently written cache of the
//! namespace whose user key starts with the prefix, as Agola does. Expiry is by age.

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
        let Some(Found {
            key: found,
            object,
            meta,
        }) = self.find(key, prefix).await?
        else {
            return Ok(None);
        };
        match self.blobs.get(&object).await {
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
        let (namespace, user_key) = validate_key(key)?;
        Ok(self
            .blobs
            .put_stream_if_absent(&object_key(namespace, user_key), data)
            .await?)
    }

    /// Deletes the cache with exactly `key` (missing is fine).
    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let (namespace, user_key) = validate_key(key)?;
        Ok(self.blobs.delete(&object_key(namespace, user_key)).await?)
    }

    /// Deletes caches saved before `older_than`; returns how many.
    pub async fn expire(&self, older_than: DateTime<Utc>) -> Result<usize, CacheError> {
        Ok(self
            .blobs
            .delete_older_than(CACHES_PREFIX, older_than)
            .await?)
    }

    /// The cache `key` designates, if any.
    async fn find(&self, key: &str, prefix: bool) -> Result<Option<Found>, CacheError> {
        let (namespace, user_key) = validate_key(key)?;
        let object = object_key(namespace, user_key);
        // The exact key first: a prefix lookup must not prefer a longer key that merely
        // starts with it (security review M4).
        let exact = self.blobs.head(&object).await?;
        let found = match exact {
            Some(meta) => Some((object, meta)),
            None if prefix => self.blobs.newest_with_prefix(&object).await?,
            None => None,
        };
        Ok(found
            .and_then(|(object, meta)| decode_key(&object).map(|key| Found { key, object, meta })))
    }
}

/// A cache [`CacheStore::find`] found: its full key, object and metadata.
struct Found {
    key: String,
    object: String,
    meta: Meta,
}

/// The longest namespace, in hex digits (today's are 32).
const MAX_NAMESPACE_CHARS: usize = 64;

/// Checks a full cache key `<namespace>/<user key>` and splits it: the namespace is 1 to
/// 64 lowercase hex digits; the user key is not empty, not `.`, has no `..`, no leading
/// `/` and no control characters; the whole is at most [`MAX_KEY_CHARS`] characters.
pub fn validate_key(key: &str) -> Result<(&str, &str), CacheError> {
    let bad = |reason| {
        Err(CacheError::BadKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.chars().count() > MAX_KEY_CHARS {
        return bad("it is longer than 200 characters");
    }
    let Some((namespace, user_key)) = key.split_once('/') else {
        return bad("it has no `<cache group namespace>/` in front");
    };
    if namespace.is_empty()
        || namespace.len() > MAX_NAMESPACE_CHARS
        || !namespace
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return bad("its cache group namespace is not 1 to 64 lowercase hex digits");
    }
    if user_key.is_empty() {
        return bad("it is empty");
    }
    if user_key.contains("..") {
        return bad("it contains `..`");
    }
    if user_key.starts_with('/') {
        return bad("it starts with `/`");
    }
    if user_key == "." {
        return bad("it is `.`");
    }
    if user_key.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    Ok((namespace, user_key))
}

/// The object of a validated key: the namespace is a directory, the user key one segment
/// in it (so a prefix of the user key is a prefix of the object within that directory).
fn object_key(namespace: &str, user_key: &str) -> String {
    format!("{CACHES_PREFIX}{namespace}/{}", key_segment(user_key))
}

/// The full cache key of an object under `caches/` (undoing [`object_key`]).
fn decode_key(object: &str) -> Option<String> {
    let (namespace, segment) = object.strip_prefix(CACHES_PREFIX)?.split_once('/')?;
    Some(format!("{namespace}/{}", percent_decode(segment)?))
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
            let found = caches.find(key, false).await.expect("find").expect("saved");
            if found.meta.last_modified > after {
                return found.meta;
            }
            caches.delete(key).await.expect("delete");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_saved_cache_is_found_by_its_exact_key() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            let key = "a1/go-mod-abc123";
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
                    .exists("a1/go-mod-abc", false)
                    .await
                    .expect("exact only")
            );
        }
    }

    #[tokio::test]
    async fn the_first_writer_wins_and_a_second_save_leaves_it_untouched() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            assert!(
                caches
                    .put("a1/k", pieces(b"first", 2))
                    .await
                    .expect("first")
            );
            assert!(
                !caches
                    .put("a1/k", pieces(b"second!", 2))
                    .await
                    .expect("second")
            );
            let (_, data) = content(&caches, "a1/k", false).await.expect("hit");
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
                            caches
                                .put("a1/shared", pieces(&data, 5))
                                .await
                                .expect("put"),
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
            let (_, data) = content(&caches, "a1/shared", false).await.expect("hit");
            assert_eq!(data, format!("saved by {}", winners[0]).as_bytes());
        }
    }

    #[tokio::test]
    async fn a_prefix_lookup_returns_the_newest_matching_cache() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            let older = save_newer_than(&caches, "a1/deps-zzz", DateTime::<Utc>::MIN_UTC).await;
            let newer = save_newer_than(&caches, "a1/deps-aaa", older.last_modified).await;
            save_newer_than(&caches, "a1/other", newer.last_modified).await;
            // Newer, and in another namespace: never a match.
            save_newer_than(&caches, "b2/deps-x", newer.last_modified).await;
            let (key, data) = content(&caches, "a1/deps-", true).await.expect("hit");
            assert_eq!(key, "a1/deps-aaa", "{}", be.name);
            assert_eq!(data, b"a1/deps-aaa");
            assert!(caches.exists("a1/deps", true).await.expect("exists"));
            assert!(!caches.exists("a1/deps", false).await.expect("exists"));
        }
    }

    #[tokio::test]
    async fn a_missing_cache_is_none_not_an_error() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            assert!(caches.get("a1/nope", false).await.expect("get").is_none());
            assert!(caches.get("a1/nope", true).await.expect("get").is_none());
            assert!(
                !caches.exists("a1/nope", true).await.expect("exists"),
                "{}",
                be.name
            );
        }
    }

    #[tokio::test]
    async fn keys_with_slashes_hashes_and_spaces_round_trip_and_match_by_prefix() {
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            let key = "a1/grp/proj-node modules#1 50%";
            assert!(caches.put(key, pieces(b"nm", 1)).await.expect("put"));
            let (found, data) = content(&caches, "a1/grp/proj-node mod", true)
                .await
                .expect("hit");
            assert_eq!(found, key, "{}", be.name);
            assert_eq!(data, b"nm");
            assert!(caches.exists(key, false).await.expect("exists"));
            // The key is one object: nothing was created outside `caches/`.
            let all = be.blobs.list("").await.expect("list");
            assert_eq!(all.len(), 1);
            assert!(all[0].0.starts_with("caches/a1/grp%2Fproj"), "{all:?}");
        }
    }

    #[tokio::test]
    async fn bad_keys_are_refused() {
        let long = "k".repeat(MAX_KEY_CHARS + 1);
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            for key in [
                "",
                "a1/",
                "a1//abs",
                "a1/a/../b",
                "a1/..",
                "a1/.",
                "a1/tab\there",
                "a1/nl\n",
                "no-namespace",
                "/abs",
                "A1/upper-case-namespace",
                "g1/not-hex",
                "../a1/k",
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
            let longest = format!("a1/{}", "k".repeat(MAX_KEY_CHARS - 3));
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
            let old = save_newer_than(&caches, "a1/old-1", DateTime::<Utc>::MIN_UTC).await;
            let new = save_newer_than(&caches, "b2/new-1", old.last_modified).await;
            be.blobs
                .put("archives/t/0.tar", Bytes::from_static(b"not a cache"))
                .await
                .expect("put");
            assert_eq!(caches.expire(new.last_modified).await.expect("expire"), 1);
            assert!(
                !caches.exists("a1/old-1", false).await.expect("exists"),
                "{}",
                be.name
            );
            assert!(caches.exists("b2/new-1", false).await.expect("exists"));
            assert!(
                be.blobs
                    .head("archives/t/0.tar")
                    .await
                    .expect("head")
                    .is_some()
            );
        }
    }

    /// The leak of issue 10 (12): project `app` restoring by prefix `web-` got project
    /// `app-web`'s cache `deps`, because both lived in one flat `<prefix>-<key>` space.
    #[tokio::test]
    async fn a_prefix_restore_never_crosses_into_another_cache_group() {
        use crate::runservice::cache_namespace::cache_namespace;
        for be in backends() {
            let caches = CacheStore::new(be.blobs.clone());
            let app = cache_namespace(None, "/project/app/branch/main");
            let app_web = cache_namespace(None, "/project/app-web/branch/main");
            let secret = format!("{app_web}/deps");
            assert!(
                caches
                    .put(&secret, pieces(b"secret", 1))
                    .await
                    .expect("put")
            );
            for probe in ["web-", "web-deps", "w", "deps"] {
                let key = format!("{app}/{probe}");
                assert!(
                    !caches.exists(&key, true).await.expect("exists"),
                    "{}: {key}",
                    be.name
                );
                assert!(caches.get(&key, true).await.expect("get").is_none());
            }
            // A namespace that is a prefix of another one names its own directory only.
            let short = &app_web[..8];
            assert!(
                caches
                    .get(&format!("{short}/d"), true)
                    .await
                    .expect("get")
                    .is_none()
            );
            // The other group still finds its own.
            let (found, data) = content(&caches, &format!("{app_web}/de"), true)
                .await
                .expect("its own cache");
            assert_eq!(
                (found.as_str(), data.as_slice()),
                (secret.as_str(), &b"secret"[..])
            );
            // User x and project x are two groups.
            let user_x = cache_namespace(None, "/user/x/branch/main");
            let project_x = cache_namespace(None, "/project/x/branch/main");
            assert!(
                caches
                    .put(&format!("{user_x}/deps"), pieces(b"u", 1))
                    .await
                    .expect("put")
            );
            assert!(
                !caches
                    .exists(&format!("{project_x}/deps"), true)
                    .await
                    .expect("exists")
            );
        }
    }

    #[test]
    fn keys_split_into_namespace_and_user_key_at_the_first_slash() {
        assert_eq!(
            validate_key("0af/deps/linux-x").expect("valid"),
            ("0af", "deps/linux-x")
        );
        assert_eq!(
            object_key("0af", "deps/linux-x"),
            "caches/0af/deps%2Flinux-x"
        );
        assert_eq!(
            decode_key("caches/0af/deps%2Flinux-x").as_deref(),
            Some("0af/deps/linux-x")
        );
        assert_eq!(decode_key("caches/flat-old-key"), None);
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

//! Opening a [`Blobs`] by URL: a local directory, `memory:` or `s3://bucket[/prefix]`
//! (cargo feature `s3`), with the backend options that configuration passes in.

use super::*;

impl Blobs {
    /// Opens the object store named by `url`:
    /// - `file:///abs/dir` or a plain path: a local directory, created if missing;
    /// - `memory:`: a fresh in-memory store (tests);
    /// - `s3://bucket[/prefix]`: S3 or an S3-compatible store (cargo feature `s3`); see
    ///   [`Blobs::open_with`] for credentials and endpoint.
    pub fn open(url: &str) -> Result<Blobs, BlobError> {
        Blobs::open_with(url, std::iter::empty::<(&str, &str)>())
    }

    /// Like [`Blobs::open`] with backend options, for S3 the `object_store` AWS config keys
    /// (`aws_access_key_id`, `aws_secret_access_key`, `aws_region`, `aws_endpoint`,
    /// `aws_allow_http`, `timeout` (each request, default 30 s), `connect_timeout`, …) and
    /// Cairn's bounds on retrying a failed or timed-out request: `max_retries` (default 10)
    /// and `retry_timeout` (no new attempt after this long, default 3 min; durations as
    /// `500ms`, `30s` or `2m`). A stalled server is thus an error after at most about
    /// `retry_timeout` plus one `timeout`. Options are refused for backends that take none,
    /// and nothing is read from the environment: configuration passes them in.
    pub fn open_with<I, K, V>(url: &str, options: I) -> Result<Blobs, BlobError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let bad = |reason: &str| BlobError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let options: Vec<(String, String)> = options
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.into()))
            .collect();
        if let Some(rest) = url.strip_prefix("s3://") {
            return open_s3(url, rest, options);
        }
        if !options.is_empty() {
            return Err(bad("options are only accepted for s3:// stores"));
        }
        if url == "memory:" || url == "memory://" {
            return Ok(Blobs::from_store(Arc::new(InMemory::new())));
        }
        let dir = match url.strip_prefix("file://") {
            Some(dir) if dir.starts_with('/') => dir,
            Some(_) => return Err(bad("a file:// URL needs an absolute path (file:///dir)")),
            None if url.contains("://") => {
                return Err(bad(
                    "unknown scheme (use file:///dir, a plain path, memory: or s3://bucket)",
                ));
            }
            None if url.is_empty() => return Err(bad("empty path")),
            None => url,
        };
        std::fs::create_dir_all(dir).map_err(|source| BlobError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|source| BlobError::store("open", dir, source))?
            .with_automatic_cleanup(true);
        Ok(Blobs::from_store(Arc::new(store)))
    }
}

/// Opens an S3 store at `s3://<rest>` (the `s3` feature).
#[cfg(feature = "s3")]
fn open_s3(url: &str, rest: &str, options: Vec<(String, String)>) -> Result<Blobs, BlobError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
    use object_store::prefix::PrefixStore;

    let bad = |reason: String| BlobError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("missing bucket name (s3://bucket/prefix)".to_owned()));
    }
    // Conditional puts (If-None-Match) are on by default; linking staged streams uses a
    // conditional multipart copy, which AWS and most compatible stores support.
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    let mut retry = object_store::RetryConfig::default();
    for (key, value) in options {
        match key.as_str() {
            MAX_RETRIES => {
                retry.max_retries = value
                    .parse()
                    .map_err(|e| bad(format!("s3 option {MAX_RETRIES}={value:?}: {e}")))?;
                continue;
            }
            RETRY_TIMEOUT => {
                retry.retry_timeout = parse_duration(&value).ok_or_else(|| {
                    bad(format!(
                        "s3 option {RETRY_TIMEOUT}={value:?}: not a duration (500ms, 30s, 2m)"
                    ))
                })?;
                continue;
            }
            _ => {}
        }
        let key: AmazonS3ConfigKey = key
            .parse()
            .map_err(|e| bad(format!("unknown s3 option {key:?}: {e}")))?;
        builder = builder.with_config(key, value);
    }
    let store = builder
        .with_retry(retry)
        .build()
        .map_err(|e| bad(format!("invalid s3 configuration: {e}")))?;
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return Ok(Blobs::from_store(Arc::new(store)));
    }
    let prefix = parse_key(prefix)?;
    Ok(Blobs::from_store(Arc::new(PrefixStore::new(store, prefix))))
}

/// The option bounding how many times a failed request is retried.
#[cfg(feature = "s3")]
const MAX_RETRIES: &str = "max_retries";

/// The option bounding how long after a request's first attempt it may be retried.
#[cfg(feature = "s3")]
const RETRY_TIMEOUT: &str = "retry_timeout";

/// A duration written `<n>ms`, `<n>s` or `<n>m`, at most a day.
#[cfg(feature = "s3")]
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit): (&str, fn(u64) -> Duration) = if let Some(n) = text.strip_suffix("ms") {
        (n, Duration::from_millis)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, Duration::from_secs)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, |m| Duration::from_secs(m.saturating_mul(60)))
    } else {
        return None;
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let duration = unit(digits.parse().ok()?);
    (duration <= Duration::from_secs(24 * 3600)).then_some(duration)
}

/// Without the `s3` feature an `s3://` URL is a clear configuration error.
#[cfg(not(feature = "s3"))]
fn open_s3(url: &str, _rest: &str, _options: Vec<(String, String)>) -> Result<Blobs, BlobError> {
    Err(BlobError::BadUrl {
        url: url.to_owned(),
        reason: "this build has no S3 support (rebuild with `--features s3`)".to_owned(),
    })
}

//! Tests of [`Blobs`] on every backend: atomic and first-writer-wins puts, streaming
//! uploads, reads and ranges, string-prefix listings, deletes and opening by URL.

use super::testing::{backends, collect, pieces, put_newer_than};
use super::*;

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn failed<T>(result: Result<T, BlobError>, what: &str) -> BlobError {
    match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e,
    }
}

#[test]
fn open_accepts_memory_file_urls_and_plain_paths_creating_the_directory() {
    assert!(Blobs::open("memory:").is_ok());
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("a/b/blobs");
    Blobs::open(nested.to_str().expect("utf-8 path")).expect("plain path");
    assert!(nested.is_dir());
    let url = format!("file://{}", dir.path().join("c").display());
    Blobs::open(&url).expect("file url");
    assert!(dir.path().join("c").is_dir());
}

#[test]
fn open_refuses_unknown_schemes_relative_file_urls_and_stray_options() {
    for url in ["gs://bucket", "file://relative/dir", "", "http://x/y"] {
        let err = Blobs::open(url).expect_err(url);
        assert!(matches!(err, BlobError::BadUrl { .. }), "{url}: {err}");
    }
    let err = Blobs::open_with("memory:", [("aws_region", "x")]).expect_err("options");
    assert!(matches!(err, BlobError::BadUrl { .. }));
}

#[cfg(not(feature = "s3"))]
#[test]
fn s3_urls_without_the_feature_say_how_to_get_it() {
    let err = Blobs::open("s3://bucket/prefix").expect_err("no s3 in this build");
    assert!(err.to_string().contains("--features s3"), "{err}");
}

#[cfg(feature = "s3")]
#[test]
fn s3_urls_with_the_feature_build_a_store_and_check_options() {
    Blobs::open_with(
        "s3://bucket/some/prefix",
        [
            ("aws_region", "eu-west-1"),
            ("aws_endpoint", "http://127.0.0.1:9"),
        ],
    )
    .expect("s3 store");
    let err = Blobs::open_with("s3://bucket", [("no_such_option", "x")]).expect_err("bad");
    assert!(matches!(err, BlobError::BadUrl { .. }));
    assert!(Blobs::open("s3://").is_err());
}

#[tokio::test]
async fn put_then_get_returns_the_bytes_and_put_replaces() {
    for be in backends() {
        be.blobs.put("a/b/c", b("hello")).await.expect("put");
        let got = collect(be.blobs.get("a/b/c").await.expect("get")).await;
        assert_eq!(got, b"hello", "{}", be.name);
        be.blobs.put("a/b/c", b("bye")).await.expect("put again");
        assert_eq!(&be.blobs.get_bytes("a/b/c").await.expect("get")[..], b"bye");
    }
}

#[tokio::test]
async fn missing_objects_are_not_found_for_get_and_none_for_head() {
    for be in backends() {
        let err = failed(be.blobs.get("no/such").await, "missing");
        assert!(err.is_not_found(), "{}: {err}", be.name);
        let err = failed(be.blobs.get_range("no/such", 3).await, "missing");
        assert!(err.is_not_found(), "{}: {err}", be.name);
        assert_eq!(be.blobs.head("no/such").await.expect("head"), None);
    }
}

#[tokio::test]
async fn get_range_streams_from_an_offset_to_the_end() {
    for be in backends() {
        be.blobs.put("r", b("0123456789")).await.expect("put");
        let tail = collect(be.blobs.get_range("r", 4).await.expect("range")).await;
        assert_eq!(tail, b"456789", "{}", be.name);
        let all = collect(be.blobs.get_range("r", 0).await.expect("range")).await;
        assert_eq!(all, b"0123456789");
        let none = collect(be.blobs.get_range("r", 10).await.expect("at end")).await;
        assert!(none.is_empty());
        let err = failed(be.blobs.get_range("r", 11).await, "past end");
        assert!(
            matches!(err, BlobError::OffsetPastEnd { size: 10, .. }),
            "{err}"
        );
    }
}

#[tokio::test]
async fn head_reports_size_and_modification_time() {
    for be in backends() {
        let before = Utc::now() - chrono::Duration::seconds(5);
        be.blobs.put("h", b("12345")).await.expect("put");
        let meta = be.blobs.head("h").await.expect("head").expect("exists");
        assert_eq!(meta.size, 5, "{}", be.name);
        assert!(meta.last_modified > before);
    }
}

#[tokio::test]
async fn put_stream_uploads_large_objects_in_parts_byte_identical() {
    let data: Vec<u8> = (0..(2 * PART_SIZE + 12_345))
        .map(|i| (i % 251) as u8)
        .collect();
    for be in backends() {
        let size = be
            .blobs
            .put_stream("big/object", pieces(&data, 64 * 1024))
            .await
            .expect("put_stream");
        assert_eq!(size, data.len() as u64, "{}", be.name);
        let got = collect(be.blobs.get("big/object").await.expect("get")).await;
        assert!(got == data, "{}: content differs", be.name);
    }
}

#[tokio::test]
async fn put_stream_of_a_small_or_empty_stream_stores_it() {
    for be in backends() {
        let size = be
            .blobs
            .put_stream("small", pieces(b"abcdef", 2))
            .await
            .expect("put_stream");
        assert_eq!(size, 6);
        assert_eq!(
            &be.blobs.get_bytes("small").await.expect("get")[..],
            b"abcdef"
        );
        let empty = stream::iter(Vec::<Result<Bytes, std::io::Error>>::new());
        assert_eq!(be.blobs.put_stream("empty", empty).await.expect("empty"), 0);
        assert_eq!(
            be.blobs.head("empty").await.expect("head").map(|m| m.size),
            Some(0)
        );
    }
}

#[tokio::test]
async fn a_failing_source_stores_nothing_small_or_large() {
    let big = vec![7u8; PART_SIZE + 1];
    for be in backends() {
        for (key, first) in [("small", vec![1u8; 10]), ("large", big.clone())] {
            let items = vec![
                Ok(Bytes::from(first)),
                Ok(Bytes::from_static(b"more")),
                Err(std::io::Error::other("client went away")),
            ];
            let err = be
                .blobs
                .put_stream(key, stream::iter(items))
                .await
                .expect_err("source failed");
            assert!(
                matches!(err, BlobError::Source { .. }),
                "{}: {err}",
                be.name
            );
            assert_eq!(be.blobs.head(key).await.expect("head"), None, "{}", be.name);
            assert!(be.blobs.list("").await.expect("list").is_empty());
        }
    }
}

#[tokio::test]
async fn put_if_absent_keeps_the_first_writers_data() {
    for be in backends() {
        assert!(
            be.blobs
                .put_if_absent("k", b("first"))
                .await
                .expect("first")
        );
        assert!(
            !be.blobs
                .put_if_absent("k", b("second"))
                .await
                .expect("second")
        );
        assert_eq!(&be.blobs.get_bytes("k").await.expect("get")[..], b"first");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_put_if_absent_has_exactly_one_winner() {
    for be in backends() {
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let blobs = be.blobs.clone();
                tokio::spawn(async move {
                    let won = blobs
                        .put_if_absent("race/key", Bytes::from(format!("writer {i}")))
                        .await
                        .expect("put_if_absent");
                    (i, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for w in writers {
            let (i, won) = w.await.expect("writer task");
            if won {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "{}: {winners:?}", be.name);
        let stored = be.blobs.get_bytes("race/key").await.expect("get");
        assert_eq!(stored, format!("writer {}", winners[0]).as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_put_stream_if_absent_has_exactly_one_winner() {
    for be in backends() {
        let writers: Vec<_> = (0..6)
            .map(|i| {
                let blobs = be.blobs.clone();
                tokio::spawn(async move {
                    let data = format!("streamed by writer {i}").into_bytes();
                    let won = blobs
                        .put_stream_if_absent("race/stream", pieces(&data, 3))
                        .await
                        .expect("put_stream_if_absent");
                    (i, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for w in writers {
            let (i, won) = w.await.expect("writer task");
            if won {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "{}: {winners:?}", be.name);
        let stored = be.blobs.get_bytes("race/stream").await.expect("get");
        assert_eq!(
            stored,
            format!("streamed by writer {}", winners[0]).as_bytes()
        );
        // Losers' staged data is gone.
        assert_eq!(be.blobs.clean_staging(Utc::now()).await.expect("clean"), 0);
    }
}

#[tokio::test]
async fn list_is_ordered_by_key_and_matches_string_prefixes() {
    for be in backends() {
        // (No key is both an object and a directory: local stores cannot do that.)
        for key in ["p/b", "p/a/x", "p/ab", "p/c", "q/a", "p/a/b"] {
            be.blobs.put(key, b("x")).await.expect("put");
        }
        let keys = |v: Vec<(String, Meta)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(be.blobs.list("p/a").await.expect("list")),
            ["p/a/b", "p/a/x", "p/ab"],
            "{}",
            be.name
        );
        assert_eq!(keys(be.blobs.list("p/").await.expect("list")).len(), 5);
        assert_eq!(keys(be.blobs.list("").await.expect("list")).len(), 6);
        assert!(be.blobs.list("zzz/").await.expect("list").is_empty());
    }
}

#[tokio::test]
async fn newest_with_prefix_picks_the_most_recently_written() {
    for be in backends() {
        assert_eq!(be.blobs.newest_with_prefix("c/").await.expect("none"), None);
        be.blobs.put("c/z-old", b("old")).await.expect("put");
        let old = be
            .blobs
            .head("c/z-old")
            .await
            .expect("head")
            .expect("exists");
        put_newer_than(&be.blobs, "c/a-new", b"new", old.last_modified).await;
        be.blobs.put("d/other", b("elsewhere")).await.expect("put");
        let (key, meta) = be
            .blobs
            .newest_with_prefix("c/")
            .await
            .expect("newest")
            .expect("some");
        assert_eq!(key, "c/a-new", "{}", be.name);
        assert_eq!(meta.size, 3);
    }
}

#[tokio::test]
async fn delete_tolerates_missing_and_delete_prefix_stays_inside_its_prefix() {
    for be in backends() {
        be.blobs.delete("never/was").await.expect("missing is fine");
        for key in ["t1/a", "t1/b/c", "t10/a", "t2/a"] {
            be.blobs.put(key, b("x")).await.expect("put");
        }
        assert_eq!(be.blobs.delete_prefix("t1/").await.expect("delete"), 2);
        let left: Vec<String> = be
            .blobs
            .list("")
            .await
            .expect("list")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(left, ["t10/a", "t2/a"], "{}", be.name);
    }
}

#[tokio::test]
async fn delete_older_than_removes_only_objects_written_before_the_cutoff() {
    for be in backends() {
        be.blobs.put("e/old1", b("x")).await.expect("put");
        be.blobs.put("e/old2", b("x")).await.expect("put");
        let old = be
            .blobs
            .head("e/old2")
            .await
            .expect("head")
            .expect("exists");
        let new = put_newer_than(&be.blobs, "e/new", b"x", old.last_modified).await;
        be.blobs.put("f/old", b("x")).await.expect("put");
        let deleted = be
            .blobs
            .delete_older_than("e/", new.last_modified)
            .await
            .expect("expire");
        assert_eq!(deleted, 2, "{}", be.name);
        assert!(be.blobs.head("e/new").await.expect("head").is_some());
        assert!(be.blobs.head("f/old").await.expect("head").is_some());
    }
}

#[tokio::test]
async fn malformed_keys_are_refused_before_touching_the_store() {
    for be in backends() {
        for key in ["", "/abs", "a//b", "a/", "a/../b", "a/./b", "bad\ncontrol"] {
            let err = be.blobs.put(key, b("x")).await.expect_err(key);
            assert!(
                matches!(err, BlobError::InvalidKey { .. }),
                "{key:?}: {err}"
            );
        }
    }
}

#[test]
fn key_segment_encodes_separators_and_keeps_prefixes() {
    assert_eq!(key_segment("a/b#1 c"), "a%2Fb%231 c");
    assert_eq!(key_segment(".."), "%2E%2E");
    let full = key_segment("proj-go/mod#v1");
    assert!(full.starts_with(&key_segment("proj-go/m")));
}

#[tokio::test]
async fn encoded_segments_round_trip_through_the_file_store() {
    for be in backends() {
        let key = format!("x/{}", key_segment("we/ird #12 %41 ~key"));
        be.blobs.put(&key, b("v")).await.expect("put");
        let listed = be.blobs.list("x/").await.expect("list");
        assert_eq!(listed.len(), 1, "{}", be.name);
        assert_eq!(listed[0].0, key, "{}", be.name);
    }
}

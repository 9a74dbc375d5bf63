//! Object storage on a real S3-compatible server (cargo feature `s3`): moto's server,
//! started by each test (`support::s3`), behind a fault-injecting proxy where a test breaks
//! it (`support::fault_proxy`). [`Blobs`]' operations and guarantees, segments, streamed
//! (multipart) uploads, and a server that fails or stalls mid-upload: an error within a
//! bounded time, never a hang, nothing partial visible, and a later retry that succeeds.
//! Last, a 3-node cluster of real `cairn serve` processes sharing one bucket archives
//! finished runs into segments there, and every node lists and reads them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::datamanager::archives::ArchiveStore;
use cairn::datamanager::blobs::{BlobError, Blobs};
use cairn::datamanager::keys;
use cairn::datamanager::segments::{
    self, ArchivedRun, SegmentError, SegmentLimits, SegmentMeta, SegmentWriter,
};
use cairn_client::LogStep;
use cairn_client::run::{Run, RunEvent, RunPhase, RunResult, Time};
use cairn_client::runconfig::RunConfig;
use chrono::TimeZone;
use futures::TryStreamExt;
use futures::stream::{self, Stream};

use crate::archive::{EAGER, ECHO, GROUP, LONG, listed, wait_all_segmented};
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::poll::wait_for;
use crate::support::runs::{create, step_log, task_id};
use crate::support::s3::{Patience, S3Server};
use crate::support::service::{ExecutorProc, ServiceCluster};

const MIB: usize = 1024 * 1024;

/// A fault's budget: small requests get through, bodies of uploads do not.
const BODY_CUT: u64 = 256 * 1024;

/// Longer than any bounded failure here: reaching it means the client hung.
const HANG: Duration = Duration::from_secs(120);

fn b(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

/// `len` bytes of a pattern that differs for each `seed`.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add((i >> 11) as u8) ^ seed)
        .collect()
}

/// `data` as a stream of 1 MiB chunks.
fn pieces(data: &[u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let chunks: Vec<_> = data
        .chunks(MIB)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks)
}

async fn read_all(blobs: &Blobs, key: &str) -> Vec<u8> {
    let chunks: Vec<Bytes> = blobs
        .get(key)
        .await
        .expect("get")
        .try_collect()
        .await
        .expect("read");
    chunks.concat()
}

fn at(secs: i64) -> Time {
    chrono::Utc
        .timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("a valid time")
}

/// Finished run `seq`, with its config and two events; `name` varies its bytes.
fn archived(seq: u64, name: &str) -> ArchivedRun {
    let id = keys::run_id(seq);
    let group = format!("/project/p{}/branch/main", seq % 3);
    let run = Run {
        id: id.clone(),
        name: name.to_owned(),
        counter: seq,
        group: group.clone(),
        annotations: Default::default(),
        phase: RunPhase::Finished,
        result: RunResult::Success,
        stop: false,
        cancel: false,
        tasks: Default::default(),
        enqueue_time: Some(at(0)),
        start_time: Some(at(1)),
        end_time: Some(at(2)),
        archived: true,
    };
    let config = RunConfig {
        id: id.clone(),
        name: name.to_owned(),
        group: group.clone(),
        ..RunConfig::default()
    };
    let events = [RunPhase::Running, RunPhase::Finished]
        .into_iter()
        .enumerate()
        .map(|(n, phase)| RunEvent {
            sequence: seq * 10 + n as u64,
            run_id: id.clone(),
            group: group.clone(),
            phase,
            result: RunResult::Success,
            time: at(n as i64),
        })
        .collect();
    ArchivedRun {
        run,
        config,
        events,
    }
}

/// A segment of runs `seqs` named `name`, with a fixed creation time and id suffix.
fn segment(
    seqs: std::ops::RangeInclusive<u64>,
    name: &str,
) -> (Vec<ArchivedRun>, Bytes, SegmentMeta) {
    let runs: Vec<ArchivedRun> = seqs.map(|seq| archived(seq, name)).collect();
    let mut writer = SegmentWriter::new(SegmentLimits::default());
    for run in &runs {
        writer.add(run).expect("add");
    }
    let (bytes, meta) = writer.finish_with(at(100), 0x5eed).expect("finish");
    (runs, bytes, meta)
}

/// Runs `op` and checks that it fails, within `bound` and without hanging.
async fn fails_within<T: std::fmt::Debug, E: std::fmt::Display>(
    what: &str,
    bound: Duration,
    op: impl std::future::Future<Output = Result<T, E>>,
) -> E {
    let started = Instant::now();
    let result = tokio::time::timeout(HANG, op)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after {HANG:?} (a hang)"));
    let took = started.elapsed();
    let err = result.expect_err(what);
    assert!(
        took <= bound,
        "{what}: failed after {took:?}, over {bound:?} ({err})"
    );
    err
}

#[tokio::test]
async fn s3_blobs_put_get_ranges_list_delete_and_create_once() {
    let server = S3Server::start();
    let bucket = server.bucket().await;
    let blobs = bucket.blobs("cluster-a");

    blobs.put("a/b/c", b("hello world")).await.expect("put");
    assert_eq!(read_all(&blobs, "a/b/c").await, b"hello world");
    let meta = blobs.head("a/b/c").await.expect("head").expect("exists");
    assert_eq!(meta.size, 11);
    assert_eq!(blobs.head("a/b/none").await.expect("head"), None);
    let tail: Vec<Bytes> = blobs
        .get_range("a/b/c", 6)
        .await
        .expect("range")
        .try_collect()
        .await
        .expect("read");
    assert_eq!(tail.concat(), b"world");
    let end: Vec<Bytes> = blobs
        .get_range("a/b/c", 11)
        .await
        .expect("range")
        .try_collect()
        .await
        .expect("read");
    assert!(end.concat().is_empty());
    let past = blobs
        .get_range("a/b/c", 12)
        .await
        .err()
        .expect("past the end");
    assert!(matches!(past, BlobError::OffsetPastEnd { .. }), "{past}");

    // Ranged reads are exact: never a shorter answer.
    assert_eq!(
        &blobs.get_range_bounded("a/b/c", 2, 3).await.expect("range")[..],
        b"llo"
    );
    assert_eq!(
        &blobs
            .get_range_bounded("a/b/c", 0, 11)
            .await
            .expect("range")[..],
        b"hello world"
    );
    for (offset, len) in [(8, 4), (11, 1), (20, 1)] {
        let err = blobs
            .get_range_bounded("a/b/c", offset, len)
            .await
            .expect_err("past the end");
        assert!(
            matches!(err, BlobError::OffsetPastEnd { .. }),
            "{offset}+{len}: {err}"
        );
    }
    let missing = blobs
        .get_range_bounded("a/b/none", 0, 1)
        .await
        .expect_err("missing");
    assert!(missing.is_not_found(), "{missing}");
    assert!(
        blobs
            .get("a/b/none")
            .await
            .err()
            .expect("missing")
            .is_not_found()
    );

    // Replacing puts; first-writer-wins creation.
    blobs.put("a/b/c", b("bye")).await.expect("replace");
    assert_eq!(&blobs.get_bytes("a/b/c").await.expect("get")[..], b"bye");
    assert!(
        blobs
            .put_if_absent("once", b("first"))
            .await
            .expect("create")
    );
    assert!(
        !blobs
            .put_if_absent("once", b("second"))
            .await
            .expect("refused")
    );
    assert_eq!(&blobs.get_bytes("once").await.expect("get")[..], b"first");

    // Listings are by string prefix, ordered, and confined to the store's prefix.
    for key in ["caches/proj-go-2", "caches/proj-go-1", "caches/proj-rs-1"] {
        blobs.put(key, b("x")).await.expect("put");
    }
    let listed: Vec<String> = blobs
        .list("caches/proj-go")
        .await
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(listed, ["caches/proj-go-1", "caches/proj-go-2"]);
    assert_eq!(blobs.list("").await.expect("list").len(), 5);
    assert!(
        bucket
            .blobs("cluster-b")
            .list("")
            .await
            .expect("list")
            .is_empty()
    );
    let whole: Vec<String> = bucket
        .blobs("")
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        whole.iter().all(|k| k.starts_with("cluster-a/")),
        "{whole:?}"
    );
    assert_eq!(whole.len(), 5);

    // Deletes: one, a missing one, a prefix.
    blobs.delete("a/b/c").await.expect("delete");
    assert_eq!(blobs.head("a/b/c").await.expect("head"), None);
    blobs
        .delete("a/b/c")
        .await
        .expect("deleting a missing object is not an error");
    assert_eq!(
        blobs.delete_prefix("caches/").await.expect("delete prefix"),
        3
    );
    let left: Vec<String> = blobs
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["once"]);
}

#[tokio::test]
async fn s3_streamed_uploads_go_up_in_parts_and_link_once() {
    let server = S3Server::start();
    let bucket = server.bucket().await;
    let blobs = bucket.blobs("p");
    let data = pattern(12 * MIB + 123, 1);

    let written = blobs
        .put_stream("logs/big", pieces(&data))
        .await
        .expect("put_stream");
    assert_eq!(written, data.len() as u64);
    assert_eq!(read_all(&blobs, "logs/big").await, data);
    let tail = blobs
        .get_range_bounded("logs/big", 10 * MIB as u64, 100)
        .await
        .expect("range");
    assert_eq!(&tail[..], &data[10 * MIB..10 * MIB + 100]);

    // Workspace archives are streamed through the same path.
    let archives = ArchiveStore::new(blobs.clone());
    let archive = pattern(6 * MIB, 2);
    assert_eq!(
        archives
            .put("task-1", 0, pieces(&archive))
            .await
            .expect("archive"),
        archive.len() as u64
    );
    let got = archives
        .get("task-1", 0)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got.size, archive.len() as u64);
    let got: Vec<Bytes> = got.data.try_collect().await.expect("read");
    assert_eq!(got.concat(), archive);

    // Streamed create-once (caches): staged, then linked with a conditional multipart copy.
    let first = pattern(7 * MIB, 3);
    assert!(
        blobs
            .put_stream_if_absent("caches/big", pieces(&first))
            .await
            .expect("create")
    );
    let second = pattern(7 * MIB, 4);
    assert!(
        !blobs
            .put_stream_if_absent("caches/big", pieces(&second))
            .await
            .expect("refused")
    );
    assert_eq!(read_all(&blobs, "caches/big").await, first);

    // Nothing staged or half-uploaded is left behind.
    let whole: Vec<String> = bucket
        .blobs("")
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!whole.iter().any(|k| k.contains("_staging")), "{whole:?}");
    assert_eq!(server.pending_uploads(&bucket).await, Vec::<String>::new());
}

#[tokio::test]
async fn s3_segments_are_created_once_read_by_range_listed_and_deleted() {
    let server = S3Server::start();
    let bucket = server.bucket().await;
    let blobs = bucket.blobs("cluster");
    let (runs, bytes, meta) = segment(1..=300, "build");

    segments::put_segment(&blobs, bytes.clone(), &meta)
        .await
        .expect("put");
    // A retried put of the same bytes is fine; other bytes under the key are refused.
    segments::put_segment(&blobs, bytes.clone(), &meta)
        .await
        .expect("same again");
    let (_, other, other_meta) = segment(1..=300, "other");
    assert_eq!(other_meta.key, meta.key);
    let err = segments::put_segment(&blobs, other, &other_meta)
        .await
        .expect_err("exists");
    assert!(matches!(err, SegmentError::Exists { .. }), "{err}");
    assert_eq!(blobs.get_bytes(&meta.key).await.expect("get"), bytes);

    // Another node's handle on the same bucket reads it: footer, then one run by range.
    let node_b = bucket.blobs("cluster");
    let footer = segments::read_footer(&node_b, &meta.key)
        .await
        .expect("footer");
    assert_eq!(footer.segment_id, meta.id);
    assert_eq!(footer.runs.len(), runs.len());
    for i in [0, 150, 299] {
        let run = segments::read_run(&node_b, &meta.key, &footer.runs[i])
            .await
            .expect("run");
        assert_eq!(run, runs[i]);
    }
    let (decoded, sha256) = segments::read_segment(&node_b, &meta.key)
        .await
        .expect("whole");
    assert_eq!(sha256, meta.sha256);
    assert_eq!(decoded.runs.len(), runs.len());

    let listed = segments::list_segments(&node_b).await.expect("list");
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [meta.id.as_str()]
    );
    assert_eq!(listed[0].meta.size, meta.bytes);
    segments::delete_segment(&node_b, &meta.id)
        .await
        .expect("delete");
    assert!(
        segments::list_segments(&blobs)
            .await
            .expect("list")
            .is_empty()
    );
    let gone = segments::read_footer(&blobs, &meta.key)
        .await
        .expect_err("deleted");
    assert!(
        matches!(gone, SegmentError::Blob(ref e) if e.is_not_found()),
        "{gone}"
    );
}

#[tokio::test]
async fn s3_an_upload_cut_midway_fails_leaves_nothing_and_a_retry_succeeds() {
    let server = S3Server::start();
    let bucket = server.bucket().await;
    let proxy = FaultProxy::start(server.addr()).await;
    let flaky = bucket.blobs_via(&proxy.endpoint(), "p", Patience::SHORT);
    let direct = bucket.blobs("p");
    let bound = Patience::SHORT.worst_case() * 4;
    let one = pattern(MIB, 5);
    let (_, seg, meta) = segment(1..=2_000, "cut");
    assert!(
        seg.len() as u64 > 2 * BODY_CUT,
        "the segment is large enough to be cut"
    );
    let multi = pattern(12 * MIB, 6);

    proxy.set(Fault::CutAfter(BODY_CUT));
    fails_within(
        "cut put",
        bound,
        flaky.put("objects/one", Bytes::from(one.clone())),
    )
    .await;
    fails_within(
        "cut segment put",
        bound,
        segments::put_segment(&flaky, seg.clone(), &meta),
    )
    .await;
    fails_within(
        "cut multipart",
        bound,
        flaky.put_stream("objects/multi", pieces(&multi)),
    )
    .await;
    // Two parts: the failure surfaces only when the upload is finished.
    let short = pattern(6 * MIB, 8);
    fails_within(
        "cut short multipart",
        bound,
        flaky.put_stream("objects/short", pieces(&short)),
    )
    .await;
    assert!(proxy.cut() > 0, "the proxy cut uploads");

    // Nothing partial is visible, and the failed multipart upload was aborted.
    assert!(direct.list("").await.expect("list").is_empty());
    for key in [
        "objects/one",
        "objects/multi",
        "objects/short",
        meta.key.as_str(),
    ] {
        assert_eq!(direct.head(key).await.expect("head"), None, "{key}");
    }
    assert_eq!(server.pending_uploads(&bucket).await, Vec::<String>::new());

    // Once the server is reachable again, the same calls succeed.
    proxy.set(Fault::Pass);
    flaky
        .put("objects/one", Bytes::from(one.clone()))
        .await
        .expect("put");
    segments::put_segment(&flaky, seg.clone(), &meta)
        .await
        .expect("segment");
    flaky
        .put_stream("objects/multi", pieces(&multi))
        .await
        .expect("multipart");
    flaky
        .put_stream("objects/short", pieces(&short))
        .await
        .expect("short multipart");
    assert_eq!(read_all(&direct, "objects/short").await, short);
    assert_eq!(read_all(&direct, "objects/one").await, one);
    assert_eq!(direct.get_bytes(&meta.key).await.expect("segment"), seg);
    assert_eq!(read_all(&direct, "objects/multi").await, multi);
}

#[tokio::test]
async fn s3_a_stalled_server_is_an_error_within_the_timeout_not_a_hang() {
    let server = S3Server::start();
    let bucket = server.bucket().await;
    let proxy = FaultProxy::start(server.addr()).await;
    let flaky = bucket.blobs_via(&proxy.endpoint(), "p", Patience::SHORT);
    let direct = bucket.blobs("p");
    direct.put("present", b("here")).await.expect("put");
    let one_request = Patience::SHORT.worst_case();

    // A server that accepts connections and never answers.
    proxy.set(Fault::StallAfter(0));
    fails_within("stalled head", one_request, flaky.head("present")).await;
    fails_within("stalled get", one_request, flaky.get_bytes("present")).await;
    fails_within("stalled list", one_request, flaky.list("")).await;
    fails_within("stalled put", one_request, flaky.put("new", b("x"))).await;
    fails_within(
        "stalled create",
        one_request,
        flaky.put_if_absent("new", b("x")),
    )
    .await;

    // A server that stops reading in the middle of an upload's body.
    proxy.set(Fault::StallAfter(BODY_CUT));
    let multi = pattern(11 * MIB, 7);
    fails_within(
        "stalled multipart",
        one_request * 4,
        flaky.put_stream("multi", pieces(&multi)),
    )
    .await;
    assert!(proxy.stalled() > 0, "the proxy stalled requests");
    let keys: Vec<String> = direct
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["present"], "nothing partial is visible");
    assert_eq!(server.pending_uploads(&bucket).await, Vec::<String>::new());

    proxy.set(Fault::Pass);
    flaky
        .put_stream("multi", pieces(&multi))
        .await
        .expect("retry");
    assert_eq!(read_all(&direct, "multi").await, multi);
    assert_eq!(&flaky.get_bytes("present").await.expect("get")[..], b"here");
}

#[test]
fn s3_retry_bounds_are_options_and_bad_ones_are_refused() {
    let open = |key: &str, value: &str| {
        Blobs::open_with(
            "s3://bucket/prefix",
            [("aws_endpoint", "http://127.0.0.1:9"), (key, value)],
        )
    };
    for (key, value) in [
        ("max_retries", "0"),
        ("retry_timeout", "500ms"),
        ("retry_timeout", "2m"),
        ("timeout", "3s"),
    ] {
        open(key, value).unwrap_or_else(|e| panic!("{key}={value}: {e}"));
    }
    for (key, value) in [
        ("max_retries", "-1"),
        ("max_retries", "x"),
        ("retry_timeout", "5"),
        ("retry_timeout", "s"),
        ("retry_timeout", "2h"),
        ("retry_timeout", "86401s"),
    ] {
        let err = open(key, value).expect_err(value);
        assert!(
            matches!(err, BlobError::BadUrl { .. }),
            "{key}={value}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_cluster_sharing_a_bucket_archives_runs_into_segments_every_node_reads() {
    let server = S3Server::start();
    let bucket = server.bucket().await;
    let mut args: Vec<String> = EAGER.iter().map(|a| a.to_string()).collect();
    for (key, value) in bucket.options(&server.endpoint(), Patience::NORMAL) {
        args.extend(["--objects-option".to_owned(), format!("{key}={value}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = ServiceCluster::start_in(dir, 3, &bucket.url("cluster"), &args);
    let executor_dir = tempfile::tempdir().expect("tempdir");
    let _executor = ExecutorProc::start(
        &cluster.urls().join(","),
        &executor_dir.path().join("ex"),
        &[],
    );
    let client = cluster.client();
    let mut created = BTreeSet::new();
    for _ in 0..5 {
        created.insert(create(&client, GROUP, ECHO).await.run.id);
    }
    wait_all_segmented(&cluster.nodes[0], &created).await;

    // The runs are in segments in the bucket, each once.
    let blobs = bucket.blobs("cluster");
    let mut archived = BTreeSet::new();
    for stored in segments::list_segments(&blobs).await.expect("list") {
        let footer = segments::read_footer(&blobs, &stored.key)
            .await
            .expect("footer");
        for entry in footer.runs {
            assert!(
                archived.insert(entry.id.clone()),
                "run {} in two segments",
                entry.id
            );
        }
    }
    assert_eq!(archived, created);

    // Every node's own index, built from the bucket, lists and reads them, logs included.
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let client = node.client();
        wait_for(
            LONG,
            &format!("node {i} lists every archived run"),
            || async {
                let runs = listed(&client, 2).await;
                let ids: Vec<String> = runs.iter().map(|(id, _)| id.clone()).collect();
                (ids == newest_first && runs.iter().all(|(_, archived)| *archived)).then_some(())
            },
        )
        .await;
        for id in &created {
            let run = client.run(id).await.expect("an archived run reads");
            assert!(run.run.archived, "node {i}, run {id}");
            assert_eq!(run.run.result, RunResult::Success, "node {i}, run {id}");
            assert_eq!(run.run_config.group, GROUP);
        }
        let log = step_log(
            &client,
            &newest_first[i],
            &task_id(&client.run(&newest_first[i]).await.expect("run"), "hello"),
            LogStep::Step(0),
        )
        .await;
        assert!(log.contains("archived-hello"), "node {i}: {log:?}");
    }
}

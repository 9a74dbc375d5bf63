//! Tests of segments: the writer and its limits, round trips through a real file object
//! store in a temporary directory, ranged reads of one record, corruption of every part
//! detected, a 2,000-run segment, and hostile inputs that must be refused, never panic.

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_client::run::{
    ExecutorTaskPhase, Run, RunEvent, RunPhase, RunResult, RunTask, RunTaskStatus, RunTaskStep,
    Time,
};
use cairn_client::runconfig::RunConfig;
use chrono::TimeZone;
use proptest::prelude::*;

use super::format::{
    self, ArchivedRun, FooterEntry, HEADER_LEN, RECORD_HEADER_LEN, SegmentFooter, TRAILER_LEN,
    Trailer,
};
use super::*;
use crate::datamanager::blobs::testing::backends;
use crate::datamanager::keys;

fn at(secs: i64) -> Time {
    chrono::Utc
        .timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("a valid time")
}

/// A finished run `seq` of a realistic shape: two tasks, an event per phase change.
fn archived(seq: u64) -> ArchivedRun {
    let id = keys::run_id(seq);
    let group = format!("/project/p{}/branch/main", seq % 7);
    let result = if seq.is_multiple_of(3) {
        RunResult::Failed
    } else {
        RunResult::Success
    };
    let step = RunTaskStep {
        phase: ExecutorTaskPhase::Success,
        exit_status: Some(0),
        start_time: Some(at(1)),
        end_time: Some(at(2)),
        ..RunTaskStep::default()
    };
    let tasks: BTreeMap<String, RunTask> = (0..2)
        .map(|t| {
            let task_id = format!("0f8fad5b-d9cb-469f-a165-{seq:08}{t:04}");
            let task = RunTask {
                id: task_id.clone(),
                status: RunTaskStatus::Success,
                setup_step: step.clone(),
                steps: vec![step.clone(), step.clone()],
                start_time: Some(at(1)),
                end_time: Some(at(3)),
                ..RunTask::default()
            };
            (task_id, task)
        })
        .collect();
    let run = Run {
        id: id.clone(),
        name: format!("build #{seq}"),
        counter: seq,
        group: group.clone(),
        annotations: BTreeMap::from([("branch".to_owned(), "main".to_owned())]),
        phase: RunPhase::Finished,
        result,
        stop: false,
        cancel: false,
        tasks,
        enqueue_time: Some(at(0)),
        start_time: Some(at(1)),
        end_time: Some(at(4)),
        archived: true,
    };
    let config = RunConfig {
        id: id.clone(),
        name: run.name.clone(),
        group: group.clone(),
        environment: BTreeMap::from([("CI".to_owned(), "true".to_owned())]),
        ..RunConfig::default()
    };
    let events = [
        (RunPhase::Queued, RunResult::Unknown),
        (RunPhase::Running, RunResult::Unknown),
        (RunPhase::Finished, result),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, (phase, result))| RunEvent {
        sequence: seq * 10 + n as u64,
        run_id: id.clone(),
        group: group.clone(),
        phase,
        result,
        time: at(n as i64),
    })
    .collect();
    ArchivedRun {
        run,
        config,
        events,
    }
}

fn runs(seqs: impl IntoIterator<Item = u64>) -> Vec<ArchivedRun> {
    seqs.into_iter().map(archived).collect()
}

/// A finished segment of `runs`, created at a fixed time with a fixed suffix.
fn segment(runs: &[ArchivedRun]) -> (Bytes, SegmentMeta) {
    let mut writer = SegmentWriter::new(SegmentLimits {
        max_runs: 100_000,
        max_bytes: u64::MAX,
    });
    for run in runs {
        writer.add(run).expect("add");
    }
    writer.finish_with(at(100), 0xdead_beef).expect("finish")
}

fn file_store() -> (Blobs, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    (Blobs::open(&url).expect("file store"), dir)
}

/// The trailer of a well-formed segment.
fn trailer_of(bytes: &[u8]) -> Trailer {
    let size = bytes.len() as u64;
    format::decode_trailer(&bytes[bytes.len() - TRAILER_LEN as usize..], size).expect("trailer")
}

/// `bytes` with its footer replaced by `edit(footer)`, re-encoded with a valid crc, so that
/// the checks behind the checksum are reached.
fn with_footer(bytes: &[u8], edit: impl FnOnce(&mut SegmentFooter)) -> Vec<u8> {
    let trailer = trailer_of(bytes);
    let start = trailer.footer_offset as usize;
    let end = start + trailer.footer_len as usize;
    let mut footer: SegmentFooter = serde_json::from_slice(&bytes[start..end]).expect("json");
    edit(&mut footer);
    let mut out = bytes[..start].to_vec();
    out.extend(format::encode_tail(&footer, trailer.footer_offset).expect("tail"));
    out
}

/// What an error must be.
type Expected = fn(&SegmentError) -> bool;

// --- the writer ---------------------------------------------------------------------------

#[test]
fn a_segment_decodes_to_the_runs_written_with_their_footer() {
    let input = runs([3, 5, 8]);
    let (bytes, meta) = segment(&input);
    let decoded = format::decode_segment(&bytes).expect("decode");
    assert_eq!(decoded.runs, input);
    assert_eq!(decoded.footer.version, 1);
    assert_eq!(decoded.footer.segment_id, meta.id);
    assert_eq!(decoded.footer.created, at(100));
    let ids: Vec<&str> = decoded.footer.runs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["0000000000000003", "0000000000000005", "0000000000000008"]
    );
    assert_eq!(decoded.footer.runs[0].offset, HEADER_LEN);
    assert_eq!(decoded.footer.runs[0].result, RunResult::Failed);

    assert_eq!(meta.id, "0000000000000003-0000000000000008-deadbeef");
    assert_eq!(meta.key, format!("segments/{}.seg", meta.id));
    assert_eq!(meta.runs, 3);
    assert_eq!(meta.bytes, bytes.len() as u64);
    assert_eq!(
        (meta.first_id.as_str(), meta.last_id.as_str()),
        (ids[0], ids[2])
    );
    assert_eq!(meta.sha256.len(), 64);
    assert_eq!(meta.sha256, writer::hex(&Sha256::digest(&bytes)));
    assert_eq!(&bytes[..8], b"CAIRNSEG");
    assert_eq!(&bytes[bytes.len() - 8..], b"CAIRNEND");
}

#[test]
fn the_writer_refuses_runs_out_of_order_duplicated_unfinished_or_inconsistent() {
    let mut writer = SegmentWriter::new(SegmentLimits::default());
    writer.add(&archived(5)).expect("first");
    for seq in [5, 4] {
        let err = writer.add(&archived(seq)).expect_err("not ascending");
        assert!(matches!(err, SegmentError::OutOfOrder { .. }), "{err}");
    }
    let mut running = archived(6);
    running.run.phase = RunPhase::Running;
    let err = writer.add(&running).expect_err("running");
    assert!(matches!(err, SegmentError::NotFinished { .. }), "{err}");

    let mut other_config = archived(7);
    other_config.config.id = keys::run_id(8);
    let mut other_event = archived(7);
    other_event.events[1].run_id = keys::run_id(8);
    let mut odd_group = archived(7);
    odd_group.run.group = "project//p1/".to_owned();
    for bad in [other_config, other_event, odd_group] {
        let err = writer.add(&bad).expect_err("inconsistent");
        assert!(matches!(err, SegmentError::Mismatch { .. }), "{err}");
    }
    let mut bad_id = archived(9);
    bad_id.run.id = "../../x".to_owned();
    bad_id.config.id = bad_id.run.id.clone();
    bad_id.events.clear();
    let err = writer.add(&bad_id).expect_err("bad id");
    assert!(matches!(err, SegmentError::InvalidRunId { .. }), "{err}");

    // Refusals leave the writer as it was.
    assert_eq!(writer.len(), 1);
    writer.add(&archived(7)).expect("a good run still fits");
    let (bytes, _) = writer.finish().expect("finish");
    assert_eq!(
        format::decode_segment(&bytes).expect("decode").runs.len(),
        2
    );
}

#[test]
fn the_writer_is_full_at_its_run_count_and_never_exceeds_its_byte_limit() {
    let mut writer = SegmentWriter::new(SegmentLimits {
        max_runs: 3,
        max_bytes: u64::MAX,
    });
    for seq in 1..=3 {
        writer.add(&archived(seq)).expect("fits");
    }
    let err = writer.add(&archived(4)).expect_err("full");
    assert!(matches!(err, SegmentError::Full { runs: 3, .. }), "{err}");

    let max_bytes = 20_000;
    let mut writer = SegmentWriter::new(SegmentLimits {
        max_runs: 1000,
        max_bytes,
    });
    let mut seq = 1;
    let full = loop {
        match writer.add(&archived(seq)) {
            Ok(()) => seq += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, SegmentError::Full { .. }), "{full}");
    assert!(writer.len() > 3, "{} runs", writer.len());
    let projected = writer.projected_size();
    let (bytes, meta) = writer.finish().expect("finish");
    assert!(bytes.len() as u64 <= projected && projected <= max_bytes);
    assert_eq!(meta.runs as u64, seq - 1);
}

#[test]
fn an_empty_writer_takes_one_run_larger_than_its_byte_limit_and_refuses_to_finish_empty() {
    let mut writer = SegmentWriter::new(SegmentLimits {
        max_runs: 10,
        max_bytes: 100,
    });
    writer.add(&archived(1)).expect("a lone run always fits");
    assert!(matches!(
        writer.add(&archived(2)),
        Err(SegmentError::Full { runs: 1, .. })
    ));
    assert!(writer.finish().is_ok());

    let empty = SegmentWriter::new(SegmentLimits::default());
    assert!(matches!(empty.finish(), Err(SegmentError::Empty)));
}

#[test]
fn segment_ids_are_checked_before_they_become_keys() {
    let id = "0000000000000001-0000000000000009-0a1b2c3d";
    assert_eq!(
        segment_key(id).expect("valid"),
        format!("segments/{id}.seg")
    );
    assert_eq!(segment_id_of_key(&format!("segments/{id}.seg")), Some(id));
    for bad in [
        "",
        "../x",
        "0000000000000001-0000000000000009",
        "0000000000000009-0000000000000001-0a1b2c3d",
        "0000000000000001-0000000000000009-0A1B2C3D",
        "0000000000000001-0000000000000009-0a1b2c3",
        "0000000000000001-0000000000000009-0a1b2c3d-x",
        "0000000000000001/../0000000000000009-0a1b2c3d",
        "1-9-0a1b2c3d",
    ] {
        assert!(segment_key(bad).is_err(), "{bad}");
        assert_eq!(segment_id_of_key(&format!("segments/{bad}.seg")), None);
    }
    assert_eq!(segment_id_of_key(&format!("segments/{id}")), None);
    assert_eq!(segment_id_of_key(&format!("other/{id}.seg")), None);
}

// --- the object store -------------------------------------------------------------------

#[tokio::test]
async fn a_segment_round_trips_through_a_file_store_by_footer_and_ranged_record_reads() {
    let (blobs, _dir) = file_store();
    let input = runs([10, 11, 12, 20]);
    let (bytes, meta) = segment(&input);
    put_segment(&blobs, bytes.clone(), &meta)
        .await
        .expect("put");

    let listed = list_segments(&blobs).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].key.as_str()),
        (meta.id.as_str(), meta.key.as_str())
    );
    assert_eq!(listed[0].meta.size, meta.bytes);

    let footer = read_footer(&blobs, &meta.key).await.expect("footer");
    assert_eq!(footer.segment_id, meta.id);
    assert_eq!(footer.runs.len(), 4);
    for (entry, want) in footer.runs.iter().zip(&input) {
        let got = read_run(&blobs, &meta.key, entry).await.expect("run");
        assert_eq!(&got, want);
    }
    let (whole, sha256) = read_segment(&blobs, &meta.key).await.expect("whole");
    assert_eq!(whole.runs, input);
    assert_eq!(sha256, meta.sha256);

    delete_segment(&blobs, &meta.id).await.expect("delete");
    delete_segment(&blobs, &meta.id)
        .await
        .expect("deleting again is no error");
    assert!(list_segments(&blobs).await.expect("list").is_empty());
    let err = read_footer(&blobs, &meta.key).await.expect_err("gone");
    assert!(
        matches!(&err, SegmentError::Blob(e) if e.is_not_found()),
        "{err}"
    );
    assert!(!err.is_corrupt());
}

#[tokio::test]
async fn putting_a_segment_again_is_idempotent_and_other_bytes_under_its_key_are_refused() {
    for backend in backends() {
        let blobs = &backend.blobs;
        let (bytes, meta) = segment(&runs([1, 2]));
        put_segment(blobs, bytes.clone(), &meta).await.expect("put");
        put_segment(blobs, bytes.clone(), &meta)
            .await
            .expect("a retried put of the same bytes");

        // Same id (same runs and suffix), different bytes: a different creation time.
        let mut writer = SegmentWriter::new(SegmentLimits::default());
        for run in runs([1, 2]) {
            writer.add(&run).expect("add");
        }
        let (other, other_meta) = writer.finish_with(at(999), 0xdead_beef).expect("finish");
        assert_eq!(other_meta.key, meta.key);
        let err = put_segment(blobs, other, &other_meta)
            .await
            .expect_err("different bytes");
        assert!(
            matches!(err, SegmentError::Exists { .. }),
            "{}: {err}",
            backend.name
        );
        assert_eq!(blobs.get_bytes(&meta.key).await.expect("get"), bytes);

        let mut lying = meta.clone();
        lying.bytes += 1;
        let err = put_segment(blobs, bytes, &lying).await.expect_err("size");
        assert!(matches!(err, SegmentError::Mismatch { .. }), "{err}");
    }
}

#[tokio::test]
async fn list_segments_orders_by_key_and_skips_objects_that_are_not_segments() {
    let (blobs, _dir) = file_store();
    let (b2, m2) = segment(&runs([5, 6]));
    let (b1, m1) = segment(&runs([1, 2]));
    put_segment(&blobs, b2, &m2).await.expect("put");
    put_segment(&blobs, b1, &m1).await.expect("put");
    blobs
        .put("segments/notes.txt", Bytes::from_static(b"x"))
        .await
        .expect("put");
    blobs
        .put("segmentsx/a.seg", Bytes::from_static(b"x"))
        .await
        .expect("put");
    let ids: Vec<String> = list_segments(&blobs)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, [m1.id, m2.id]);
}

#[tokio::test]
async fn a_record_is_read_by_its_range_alone() {
    let (blobs, _dir) = file_store();
    let (bytes, meta) = segment(&runs([1, 2, 3]));
    let footer = format::decode_segment(&bytes).expect("decode").footer;
    // Corrupt run 2's payload in the stored object: runs 1 and 3 still read, run 2 is
    // refused by its crc.
    let mut damaged = bytes.to_vec();
    let hit = footer.runs[1].offset + RECORD_HEADER_LEN + 10;
    damaged[hit as usize] ^= 0x20;
    blobs
        .put(&meta.key, Bytes::from(damaged))
        .await
        .expect("put");

    for i in [0, 2] {
        let run = read_run(&blobs, &meta.key, &footer.runs[i])
            .await
            .expect("intact");
        assert_eq!(run.run.id, footer.runs[i].id);
    }
    let err = read_run(&blobs, &meta.key, &footer.runs[1])
        .await
        .expect_err("damaged");
    assert!(matches!(err, SegmentError::RecordChecksum { .. }), "{err}");
    assert!(err.is_corrupt());
    assert!(matches!(
        read_segment(&blobs, &meta.key).await,
        Err(SegmentError::RecordChecksum { .. })
    ));

    // An entry pointing at the wrong record or past the end is refused, not misread.
    let mut shifted = footer.runs[0].clone();
    shifted.id = footer.runs[2].id.clone();
    let err = read_run(&blobs, &meta.key, &shifted)
        .await
        .expect_err("wrong run");
    assert!(matches!(err, SegmentError::Mismatch { .. }), "{err}");
    let mut past = footer.runs[2].clone();
    past.offset = meta.bytes - 4;
    let err = read_run(&blobs, &meta.key, &past)
        .await
        .expect_err("past end");
    assert!(
        matches!(&err, SegmentError::Blob(BlobError::OffsetPastEnd { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn damaged_footers_and_trailers_are_detected_by_read_footer() {
    let (blobs, _dir) = file_store();
    let (bytes, meta) = segment(&runs([1, 2]));
    let trailer = trailer_of(&bytes);
    let size = bytes.len();
    let cases: Vec<(usize, Expected)> = vec![
        (trailer.footer_offset as usize + 3, |e| {
            matches!(e, SegmentError::FooterChecksum { .. })
        }),
        (size - 1, |e| {
            matches!(e, SegmentError::BadMagic { part: "trailer" })
        }),
        (size - 24, |e| {
            matches!(e, SegmentError::FooterOutOfBounds { .. })
        }),
        (size - 16, |e| {
            matches!(e, SegmentError::FooterOutOfBounds { .. })
        }),
        (size - 12, |e| {
            matches!(e, SegmentError::FooterChecksum { .. })
        }),
    ];
    for (at_byte, expected) in cases {
        let mut damaged = bytes.to_vec();
        damaged[at_byte] ^= 0x01;
        blobs
            .put(&meta.key, Bytes::from(damaged))
            .await
            .expect("put");
        let err = read_footer(&blobs, &meta.key).await.expect_err("damaged");
        assert!(expected(&err), "byte {at_byte}: {err}");
        assert!(err.is_corrupt());
    }
    blobs.put(&meta.key, bytes.slice(..30)).await.expect("put");
    assert!(matches!(
        read_footer(&blobs, &meta.key).await,
        Err(SegmentError::Truncated { .. })
    ));
}

#[tokio::test]
async fn a_two_thousand_run_segment_is_written_and_read_back() {
    let (blobs, _dir) = file_store();
    let input = runs(1..=2000);
    let (bytes, meta) = segment(&input);
    assert_eq!(meta.runs, 2000);
    assert!(
        meta.bytes > 2 * TAIL_READ,
        "big enough that the footer needs its own read"
    );
    put_segment(&blobs, bytes, &meta).await.expect("put");

    let footer = read_footer(&blobs, &meta.key).await.expect("footer");
    assert!(footer.runs.len() == 2000);
    let footer_len = trailer_of(&blobs.get_bytes(&meta.key).await.expect("get")).footer_len;
    assert!(u64::from(footer_len) > TAIL_READ, "{footer_len}");
    for i in [0, 1, 999, 1998, 1999] {
        let run = read_run(&blobs, &meta.key, &footer.runs[i])
            .await
            .expect("run");
        assert_eq!(run, input[i]);
    }
    let (whole, sha256) = read_segment(&blobs, &meta.key).await.expect("whole");
    assert_eq!(whole.runs, input);
    assert_eq!(sha256, meta.sha256);
}

#[tokio::test]
async fn get_range_bounded_reads_exactly_the_range_or_says_why_not() {
    for backend in backends() {
        let blobs = &backend.blobs;
        let name = backend.name;
        blobs
            .put("r/obj", Bytes::from_static(b"0123456789"))
            .await
            .expect("put");
        let read = |offset, len| blobs.get_range_bounded("r/obj", offset, len);
        assert_eq!(
            read(0, 10).await.expect("all"),
            &b"0123456789"[..],
            "{name}"
        );
        assert_eq!(read(3, 4).await.expect("middle"), &b"3456"[..], "{name}");
        assert_eq!(read(9, 1).await.expect("last"), &b"9"[..], "{name}");
        assert!(read(10, 0).await.expect("empty at the end").is_empty());
        for (offset, len) in [(8, 3), (10, 1), (11, 0), (50, 5), (u64::MAX, 2)] {
            let err = read(offset, len).await.expect_err("past the end");
            assert!(
                matches!(err, BlobError::OffsetPastEnd { size: 10, .. }),
                "{name} {offset}+{len}: {err}"
            );
        }
        let err = blobs
            .get_range_bounded("r/missing", 0, 1)
            .await
            .expect_err("missing");
        assert!(err.is_not_found(), "{name}: {err}");
        let err = blobs
            .get_range_bounded("../r", 0, 1)
            .await
            .expect_err("bad key");
        assert!(matches!(err, BlobError::InvalidKey { .. }), "{name}: {err}");
    }
}

// --- corruption and hostile inputs ------------------------------------------------------

#[test]
fn corruption_of_each_part_is_detected_with_its_own_error() {
    let (bytes, _) = segment(&runs([1, 2, 3]));
    let footer = format::decode_segment(&bytes).expect("decode").footer;
    let trailer = trailer_of(&bytes);
    let second = footer.runs[1].offset as usize;
    let size = bytes.len();
    let flip = |at: usize, mask: u8| {
        let mut b = bytes.to_vec();
        b[at] ^= mask;
        format::decode_segment(&b).expect_err("corrupt")
    };
    let check = |name: &str, err: SegmentError, ok: bool| {
        assert!(ok, "{name}: {err}");
        assert!(err.is_corrupt(), "{name}: {err}");
    };
    let e = flip(0, 1);
    check("header magic", e, true);
    assert!(matches!(
        flip(0, 1),
        SegmentError::BadMagic { part: "header" }
    ));
    let e = flip(8, 2);
    check("version", e, true);
    assert!(matches!(
        flip(8, 2),
        SegmentError::UnsupportedVersion { version: 3 }
    ));
    assert!(matches!(
        flip(10, 1),
        SegmentError::UnknownFlags { flags: 1, .. }
    ));
    assert!(matches!(
        flip(13, 1),
        SegmentError::UnknownFlags { reserved: 256, .. }
    ));
    assert!(matches!(flip(second, 1), SegmentError::RecordLength { .. }));
    assert!(matches!(
        flip(second + 3, 0x80),
        SegmentError::RecordTooLarge { .. }
    ));
    assert!(matches!(
        flip(second + 5, 1),
        SegmentError::RecordChecksum { .. }
    ));
    assert!(matches!(
        flip(second + 20, 4),
        SegmentError::RecordChecksum { .. }
    ));
    let fo = trailer.footer_offset as usize;
    assert!(matches!(
        flip(fo + 5, 1),
        SegmentError::FooterChecksum { .. }
    ));
    assert!(matches!(
        flip(size - 24, 1),
        SegmentError::FooterOutOfBounds { .. }
    ));
    assert!(matches!(
        flip(size - 13, 0x40),
        SegmentError::FooterTooLarge { .. }
    ));
    assert!(matches!(
        flip(size - 12, 1),
        SegmentError::FooterChecksum { .. }
    ));
    assert!(matches!(
        flip(size - 2, 1),
        SegmentError::BadMagic { part: "trailer" }
    ));
}

#[test]
fn hostile_footers_with_valid_checksums_are_refused() {
    let (bytes, _) = segment(&runs([1, 2, 3]));
    let refuse = |name: &str, edit: &dyn Fn(&mut SegmentFooter), ok: Expected| {
        let hostile = with_footer(&bytes, edit);
        let err = format::decode_segment(&hostile).expect_err(name);
        assert!(ok(&err), "{name}: {err}");
        assert!(err.is_corrupt(), "{name}");
    };
    refuse("unknown version", &|f| f.version = 2, |e| {
        matches!(e, SegmentError::UnsupportedVersion { version: 2 })
    });
    refuse("no runs", &|f| f.runs.clear(), |e| {
        matches!(e, SegmentError::Empty)
    });
    refuse(
        "bad segment id",
        &|f| f.segment_id = "../../etc".into(),
        |e| matches!(e, SegmentError::InvalidSegmentId { .. }),
    );
    refuse(
        "segment id of other runs",
        &|f| f.segment_id = "0000000000000001-0000000000000004-00000000".into(),
        |e| matches!(e, SegmentError::InvalidSegmentId { .. }),
    );
    refuse("swapped", &|f| f.runs.swap(1, 2), |e| {
        // The id check runs first: the segment id's last run is no longer last.
        matches!(
            e,
            SegmentError::InvalidSegmentId { .. } | SegmentError::OutOfOrder { .. }
        )
    });
    refuse(
        "duplicate id",
        &|f| f.runs[1].id = f.runs[0].id.clone(),
        |e| matches!(e, SegmentError::OutOfOrder { .. }),
    );
    refuse("descending", &|f| f.runs[1].id = keys::run_id(0), |e| {
        matches!(e, SegmentError::OutOfOrder { .. })
    });
    refuse(
        "invalid run id",
        &|f| f.runs[1].id = "0000000000000001/x".into(),
        |e| matches!(e, SegmentError::InvalidRunId { .. }),
    );
    refuse("odd group", &|f| f.runs[1].group = "a\0b".into(), |e| {
        matches!(e, SegmentError::Mismatch { .. })
    });
    refuse("overlap", &|f| f.runs[1].offset -= 1, |e| {
        matches!(e, SegmentError::EntriesNotContiguous { .. })
    });
    refuse("gap", &|f| f.runs[1].offset += 1, |e| {
        matches!(
            e,
            SegmentError::EntriesNotContiguous { .. } | SegmentError::EntryOutOfBounds { .. }
        )
    });
    refuse(
        "short tiling",
        &|f| {
            f.runs.pop();
            f.segment_id = "0000000000000001-0000000000000002-00000000".into();
        },
        |e| matches!(e, SegmentError::EntriesNotContiguous { .. }),
    );
    refuse("past the footer", &|f| f.runs[2].len += 1, |e| {
        matches!(e, SegmentError::EntryOutOfBounds { .. })
    });
    refuse(
        "offset overflow",
        &|f| f.runs[2].offset = u64::MAX - 2,
        |e| matches!(e, SegmentError::EntryOutOfBounds { .. }),
    );
    refuse("huge record", &|f| f.runs[2].len = u64::MAX, |e| {
        matches!(e, SegmentError::RecordTooLarge { .. })
    });
    refuse("tiny record", &|f| f.runs[0].len = 3, |e| {
        matches!(e, SegmentError::EntryOutOfBounds { .. })
    });
    refuse(
        "other phase",
        &|f| f.runs[0].phase = RunPhase::Cancelled,
        |e| matches!(e, SegmentError::Mismatch { .. }),
    );
    refuse(
        "other group",
        &|f| f.runs[0].group = "/elsewhere".into(),
        |e| matches!(e, SegmentError::Mismatch { .. }),
    );

    // Unknown fields and footers that are not JSON objects.
    let trailer = trailer_of(&bytes);
    for json in [
        &br#"{"version":1,"segment_id":"x","created":"2026-01-01T00:00:00Z","runs":[],"extra":1}"#
            [..],
        b"[]",
        b"\"",
        &b"[".repeat(10_000),
    ] {
        let mut hostile = bytes[..trailer.footer_offset as usize].to_vec();
        let footer_offset = hostile.len() as u64;
        hostile.extend_from_slice(json);
        hostile.extend_from_slice(&format::encode_trailer(&Trailer {
            footer_offset,
            footer_len: json.len() as u32,
            footer_crc: crc32fast::hash(json),
        }));
        let err = format::decode_segment(&hostile).expect_err("not a footer");
        assert!(matches!(err, SegmentError::FooterJson { .. }), "{err}");
    }
}

#[test]
fn records_must_be_the_runs_their_entries_name() {
    let (bytes, _) = segment(&runs([1, 2]));
    let footer = format::decode_segment(&bytes).expect("decode").footer;
    let entry = &footer.runs[0];
    let record = &bytes[entry.offset as usize..(entry.offset + entry.len) as usize];
    let other = FooterEntry {
        id: keys::run_id(2),
        ..entry.clone()
    };
    assert!(matches!(
        format::decode_record(record, &other),
        Err(SegmentError::Mismatch { .. })
    ));
    let longer = FooterEntry {
        len: entry.len + 1,
        ..entry.clone()
    };
    assert!(matches!(
        format::decode_record(record, &longer),
        Err(SegmentError::RecordLength { .. })
    ));

    // A record whose crc is right but whose JSON is not an archived run.
    let payload = br#"{"run":1}"#;
    let mut forged = (payload.len() as u32).to_le_bytes().to_vec();
    forged.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    forged.extend_from_slice(payload);
    let forged_entry = FooterEntry {
        len: forged.len() as u64,
        ..entry.clone()
    };
    assert!(matches!(
        format::decode_record(&forged, &forged_entry),
        Err(SegmentError::RecordJson { .. })
    ));
}

#[test]
fn every_truncation_and_every_single_bit_flip_is_an_error() {
    let (bytes, _) = segment(&runs([1, 2]));
    for len in 0..bytes.len() {
        assert!(
            format::decode_segment(&bytes[..len]).is_err(),
            "truncated to {len}"
        );
        assert!(
            format::decode_segment(&bytes[bytes.len() - len..]).is_err(),
            "cut to the last {len}"
        );
    }
    let mut b = bytes.to_vec();
    for bit in 0..b.len() * 8 {
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(format::decode_segment(&b).is_err(), "bit {bit} flipped");
        b[bit / 8] ^= 1 << (bit % 8);
    }
    assert!(format::decode_segment(&b).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = format::decode_segment(&bytes);
        let size = bytes.len() as u64;
        let _ = format::decode_trailer(&bytes[bytes.len().saturating_sub(24)..], size);
        let _ = format::decode_header(&bytes);
    }

    #[test]
    fn arbitrary_trailers_and_footers_never_panic(
        footer_offset in any::<u64>(),
        footer_len in any::<u32>(),
        object_size in any::<u64>(),
        json in "[\\[\\]{}\":,0-9a-z_]{0,80}",
    ) {
        let trailer = Trailer { footer_offset, footer_len, footer_crc: crc32fast::hash(json.as_bytes()) };
        let _ = format::decode_trailer(&format::encode_trailer(&trailer), object_size);
        let _ = format::decode_footer(json.as_bytes(), &trailer);
        let exact = Trailer { footer_len: json.len() as u32, ..trailer };
        let _ = format::decode_footer(json.as_bytes(), &exact);
    }

    #[test]
    fn overwritten_and_spliced_segments_are_refused_never_panic(
        at in any::<prop::sample::Index>(),
        junk in proptest::collection::vec(any::<u8>(), 1..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let (bytes, _) = segment(&runs([1, 2]));
        let mut b = bytes.to_vec();
        let start = at.index(b.len());
        let mut changed = false;
        for (i, x) in junk.iter().enumerate() {
            if let Some(slot) = b.get_mut(start + i) {
                changed |= *slot != *x;
                *slot = *x;
            }
        }
        let result = format::decode_segment(&b);
        prop_assert!(result.is_err() || !changed);
        let mut spliced = b[..cut.index(b.len())].to_vec();
        spliced.extend_from_slice(&junk);
        spliced.extend_from_slice(&b[cut.index(b.len())..]);
        prop_assert!(format::decode_segment(&spliced).is_err());
    }
}

#[test]
fn offsets_in_a_decoded_footer_are_within_the_object() {
    let (bytes, _) = segment(&runs(1..=50));
    let decoded = format::decode_segment(&bytes).expect("decode");
    let trailer = trailer_of(&bytes);
    let mut end = HEADER_LEN;
    for entry in &decoded.footer.runs {
        assert_eq!(entry.offset, end);
        end += entry.len;
    }
    assert_eq!(end, trailer.footer_offset);
    assert_eq!(
        end + u64::from(trailer.footer_len) + TRAILER_LEN,
        bytes.len() as u64
    );
}

/// Every run of `key` through a [`SegmentReader`], `batch` at a time, and the SHA-256.
async fn stream_all(
    blobs: &Blobs,
    key: &str,
    batch: usize,
) -> Result<(Vec<ArchivedRun>, Vec<usize>, String), SegmentError> {
    let mut reader = SegmentReader::open(blobs, key).await?;
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let got = reader.next_batch(batch).await?;
        if got.is_empty() {
            break;
        }
        sizes.push(got.len());
        for (entry, run) in got {
            assert_eq!(entry.id, run.run.id);
            all.push(run);
        }
    }
    let sha256 = reader.finish().await?;
    Ok((all, sizes, sha256))
}

#[tokio::test]
async fn a_streamed_segment_gives_every_run_in_batches_and_the_sha_of_the_whole_object() {
    let (blobs, _dir) = file_store();
    let input = runs(1..=1203);
    let (bytes, meta) = segment(&input);
    put_segment(&blobs, bytes, &meta).await.expect("put");

    let (got, sizes, sha256) = stream_all(&blobs, &meta.key, 500).await.expect("streamed");
    assert_eq!(got, input);
    assert_eq!(sizes, vec![500, 500, 203]);
    assert_eq!(sha256, meta.sha256);
    // A batch of 0 still moves on (one run at a time).
    let (one_by_one, sizes, _) = stream_all(&blobs, &meta.key, 0).await.expect("streamed");
    assert_eq!(one_by_one.len(), 1203);
    assert!(sizes.iter().all(|&n| n == 1));
}

#[tokio::test]
async fn a_streamed_segment_with_a_damaged_record_or_another_body_is_caught() {
    let (blobs, _dir) = file_store();
    let input = runs(1..=50);
    let (bytes, meta) = segment(&input);

    // A bit flipped inside the 30th record: the first batch passes, the one holding it
    // fails with the record's own checksum error.
    let footer = format::decode_segment(&bytes).expect("valid").footer;
    let hit = &footer.runs[29];
    let mut damaged = bytes.to_vec();
    damaged[(hit.offset + RECORD_HEADER_LEN + 3) as usize] ^= 0x10;
    put_segment(&blobs, Bytes::from(damaged), &meta)
        .await
        .expect("put");
    let mut reader = SegmentReader::open(&blobs, &meta.key).await.expect("open");
    assert_eq!(reader.next_batch(20).await.expect("first 20").len(), 20);
    let err = reader.next_batch(20).await.expect_err("the damaged record");
    assert!(
        matches!(err, SegmentError::RecordChecksum { ref id, .. } if *id == hit.id),
        "{err}"
    );

    // The same runs written again (another creation time): every record is sound, but
    // the object is not the one recorded, which only the SHA-256 tells.
    let (_, other_dir) = file_store();
    let other_blobs = Blobs::open(&format!("file://{}", other_dir.path().display())).expect("open");
    let mut writer = SegmentWriter::new(SegmentLimits {
        max_runs: 100_000,
        max_bytes: u64::MAX,
    });
    for run in &input {
        writer.add(run).expect("add");
    }
    let (other, _) = writer.finish_with(at(200), 0xdead_beef).expect("finish");
    other_blobs
        .put(&meta.key, other)
        .await
        .expect("stored under the same key");
    let (got, _, sha256) = stream_all(&other_blobs, &meta.key, 500)
        .await
        .expect("sound records");
    assert_eq!(got, input);
    assert_ne!(sha256, meta.sha256);
}

#[tokio::test]
async fn a_segment_cut_short_is_refused_not_a_hang() {
    let (blobs, _dir) = file_store();
    let input = runs(1..=40);
    let (bytes, meta) = segment(&input);
    // The footer and trailer are intact (read by range), the records are cut: the stream
    // ends before the records it promises.
    let footer = format::decode_segment(&bytes).expect("valid").footer;
    let trailer = trailer_of(&bytes);
    let cut = footer.runs[10].offset as usize;
    let mut short = bytes[..cut].to_vec();
    short.extend_from_slice(&bytes[trailer.footer_offset as usize..]);
    blobs
        .put(&meta.key, Bytes::from(short))
        .await
        .expect("stored");
    let err = stream_all(&blobs, &meta.key, 500)
        .await
        .expect_err("cut short");
    assert!(err.is_corrupt(), "{err}");
}

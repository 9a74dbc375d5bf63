//! Tests of export and import: the format and its validation, and round trips through a
//! store and object storage.

use std::collections::BTreeMap;

use cairn_client::run::{Run, RunEvent, RunPhase, RunResult};
use cairn_client::runconfig::RunConfig;

use super::*;
use crate::datamanager::blobs::Blobs;
use crate::datamanager::segments::{self, SegmentLimits, SegmentWriter};
use crate::datamanager::testing::{self, TestStore};
use crate::datamanager::{Datamanager, Versioned, put};

/// A valid export of `entries` (key, value) with a correct trailer.
const KEY: &[u8] = b"test export key";

fn export_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let (mut w, mut out) = ExportWriter::start(7, KEY, Some(false));
    for (k, v) in entries {
        w.entry(k.to_string(), v.to_string(), &mut out);
    }
    out.extend_from_slice(&w.finish());
    out
}

fn validate(bytes: &[u8], chunk: usize) -> Result<u64, DmError> {
    let mut v = Validator::new(Vec::new(), Some(KEY));
    for c in bytes.chunks(chunk) {
        v.push(c)?;
    }
    v.finish().map(|(n, _)| n)
}

const GOOD: &[(&str, &str)] = &[("rs/counter/p", "3"), ("rs/seq/run", "9")];

#[test]
fn a_valid_export_passes_in_any_chunking() {
    let e = export_of(GOOD);
    for chunk in [1, 7, 64, 4096] {
        assert_eq!(validate(&e, chunk).expect("valid"), 2);
    }
}

#[test]
fn hmac_sha256_matches_rfc_4231() {
    let mut mac = HmacSha256::new(b"Jefe");
    mac.update(b"what do ya want ");
    mac.update(b"for nothing?");
    assert_eq!(
        hex(&mac.finalize()),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // A key longer than the block is hashed first (RFC 4231 test case 6).
    let mut mac = HmacSha256::new(&[0xaa; 131]);
    mac.update(b"Test Using Larger Than Block-Size Key - Hash Key First");
    assert_eq!(
        hex(&mac.finalize()),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

/// Security review M5: the SHA-256 can be recomputed by anyone; the HMAC cannot.
#[test]
fn an_altered_export_with_a_recomputed_checksum_fails_the_hmac() {
    let e = String::from_utf8(export_of(GOOD)).expect("utf8");
    let mut lines: Vec<String> = e.split_inclusive('\n').map(str::to_string).collect();
    lines[1] = lines[1].replace("\"3\"", "\"4\"");
    let mut hash = Sha256::new();
    for l in &lines[..lines.len() - 1] {
        hash.update(l.as_bytes());
    }
    let mut trailer: serde_json::Value =
        serde_json::from_str(lines.last().expect("trailer")).expect("json");
    trailer["trailer"]["sha256"] = hex(&hash.finalize()).into();
    *lines.last_mut().expect("trailer") = format!("{trailer}\n");
    let err = validate(lines.concat().as_bytes(), 64).expect_err("tampered");
    assert!(err.to_string().contains("HMAC"), "{err}");
    // Without its HMAC, or signed with another key, it is refused as well.
    trailer["trailer"]
        .as_object_mut()
        .expect("object")
        .remove("hmac");
    *lines.last_mut().expect("trailer") = format!("{trailer}\n");
    assert!(validate(lines.concat().as_bytes(), 64).is_err());
    let mut other = Validator::new(Vec::new(), Some(b"another key".as_slice()));
    other.push(&export_of(GOOD)).expect("well-formed");
    assert!(other.finish().is_err(), "another server's key");
}

/// Security review M5: a single line longer than the cap is refused as soon as the
/// validator holds more than the cap, not at the end of the body.
#[test]
fn a_line_over_the_cap_is_refused_at_once() {
    let mut v = Validator::new(std::io::sink(), Some(KEY));
    let piece = vec![b'x'; 1 << 20];
    let mut pushed = 0;
    let err = loop {
        match v.push(&piece) {
            Ok(()) => pushed += piece.len(),
            Err(e) => break e,
        }
        assert!(pushed <= 2 * MAX_LINE_BYTES, "never refused");
    };
    assert!(err.to_string().contains("longer than"), "{err}");
    assert!(pushed <= MAX_LINE_BYTES, "{pushed}");
}

/// Security review M5: each byte is searched for a line end once, however the input
/// is cut (the parser rescanned the whole pending line at every chunk: quadratic).
#[test]
fn parsing_is_linear_in_the_input() {
    let entries: Vec<(String, String)> = (0..50)
        .map(|i| {
            let id = keys::run_id(i + 1);
            let event = cairn_client::run::RunEvent {
                sequence: 0,
                run_id: id.clone(),
                group: "v".repeat(200_000),
                phase: cairn_client::run::RunPhase::Finished,
                result: cairn_client::run::RunResult::Success,
                time: chrono::Utc::now(),
            };
            let value = serde_json::to_string(&event).expect("json");
            (format!("rs/event/{id}/finished.success"), value)
        })
        .collect();
    let (mut w, mut out) = ExportWriter::start(7, KEY, Some(false));
    for (k, v) in entries {
        w.entry(k, v, &mut out);
    }
    out.extend_from_slice(&w.finish());
    for chunk in [1, 100, 4096, out.len()] {
        let mut v = Validator::new(std::io::sink(), Some(KEY));
        for c in out.chunks(chunk) {
            v.push(c).expect("valid");
        }
        assert_eq!(v.searched, out.len() as u64, "chunks of {chunk}");
        v.finish().expect("valid");
    }
}

#[test]
fn redaction_replaces_environment_values_and_registry_secrets() {
    use cairn_client::runconfig::{RegistryAuth, RunConfig, RunConfigTask};
    let mut config = RunConfig::default();
    config.environment.insert("TOKEN".into(), "s3cret-1".into());
    config.static_environment.insert("CI".into(), "true".into());
    let mut task = RunConfigTask::default();
    task.environment.insert("KEY".into(), "s3cret-2".into());
    task.docker_registries_auth.insert(
        "ghcr.io".into(),
        RegistryAuth {
            username: "me".into(),
            password: "s3cret-3".into(),
            ..RegistryAuth::default()
        },
    );
    config.tasks.insert("t".into(), task);
    redact_secrets(&mut config);
    let text = serde_json::to_string(&config).expect("json");
    assert!(!text.contains("s3cret"), "{text}");
    assert_eq!(config.environment["TOKEN"], REDACTED);
    assert_eq!(config.static_environment["CI"], "true");
}

/// Issue 11: a run's id keys its run, config, marker and index entries; an import
/// whose run (or run config) key is not a run id, or names another run than the
/// object it holds, is refused.
#[test]
fn imported_runs_are_keyed_by_their_own_valid_run_id() {
    let run = |id: &str| {
        serde_json::json!({"id": id, "name": "r", "counter": 1, "group": "/p/x", "phase": "queued"})
            .to_string()
    };
    let config = |id: &str| {
        let c = cairn_client::runconfig::RunConfig {
            id: id.into(),
            ..Default::default()
        };
        serde_json::to_string(&c).expect("json")
    };
    const ID: &str = "0000000000000001";
    let good = export_of(&[
        (&format!("rs/run/{ID}"), &run(ID)),
        (&format!("rs/runconfig/{ID}"), &config(ID)),
    ]);
    assert_eq!(validate(&good, 64).expect("valid"), 2);
    for (key, value) in [
        ("rs/run/../../x".to_string(), run("../../x")),
        (format!("rs/run/{}", "1".repeat(300)), run(&"1".repeat(300))),
        (format!("rs/run/{ID}"), run("0000000000000002")),
        (format!("rs/run/{ID}"), run("../x")),
        ("rs/runconfig/abc".to_string(), config("abc")),
        (format!("rs/runconfig/{ID}"), config("x")),
    ] {
        let err = validate(&export_of(&[(&key, &value)]), 64).expect_err(&key);
        assert!(err.to_string().contains("run"), "{key}: {err}");
    }
}

/// Issue 11: an export made without `--include-secrets` holds `***` for every secret;
/// importing it stored `***` as the secrets. Its header says it is redacted and the
/// import refuses it, naming the flag; an export whose header does not say (made
/// before it did) is refused when a run config holds a secret `***`.
#[test]
fn a_redacted_export_is_refused_by_import() {
    let config = |value: &str| {
        let mut c = cairn_client::runconfig::RunConfig {
            id: "0000000000000001".into(),
            ..Default::default()
        };
        c.environment.insert("DEPLOY_KEY".into(), value.into());
        serde_json::to_string(&c).expect("json")
    };
    let export = |redacted: Option<bool>, value: &str| {
        let (mut w, mut out) = ExportWriter::start(7, KEY, redacted);
        w.entry(
            "rs/runconfig/0000000000000001".into(),
            config(value),
            &mut out,
        );
        out.extend_from_slice(&w.finish());
        out
    };
    for (redacted, value) in [(Some(true), "***"), (Some(true), "s3cret"), (None, "***")] {
        let err = validate(&export(redacted, value), 64).expect_err("redacted");
        assert!(
            err.to_string().contains("--include-secrets"),
            "{redacted:?} {value}: {err}"
        );
    }
    for (redacted, value) in [
        (Some(false), "s3cret"),
        (Some(false), "***"),
        (None, "s3cret"),
    ] {
        assert_eq!(
            validate(&export(redacted, value), 64).expect("with secrets"),
            1
        );
    }
}

#[test]
fn truncation_anywhere_is_detected() {
    let e = export_of(GOOD);
    for cut in 1..e.len() {
        assert!(validate(&e[..cut], 13).is_err(), "cut at {cut} passed");
    }
}

#[test]
fn an_altered_value_fails_the_checksum() {
    let e = export_of(GOOD);
    let text = String::from_utf8(e)
        .expect("utf8")
        .replace("\"3\"", "\"4\"");
    let err = validate(text.as_bytes(), 64).expect_err("altered");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn keys_out_of_order_unknown_or_a_wrong_version_are_refused() {
    let swapped = export_of(&[("rs/seq/run", "9"), ("rs/counter/p", "3")]);
    assert!(
        validate(&swapped, 64)
            .expect_err("order")
            .to_string()
            .contains("out of order")
    );
    let unknown = export_of(&[("rs/executor/x", "{}")]);
    assert!(
        validate(&unknown, 64)
            .expect_err("key")
            .to_string()
            .contains("unexpected key")
    );
    let bad_number = export_of(&[("rs/counter/p", "three")]);
    assert!(validate(&bad_number, 64).is_err());
    for version in [0, 3] {
        let other = String::from_utf8(export_of(GOOD))
            .expect("utf8")
            .replace("\"version\":2", &format!("\"version\":{version}"));
        assert!(
            validate(other.as_bytes(), 64)
                .expect_err("version")
                .to_string()
                .contains(&format!("version {version} is not supported")),
        );
    }
}

#[tokio::test]
async fn export_then_import_restores_runs_and_never_moves_counters_back() {
    let a = crate::datamanager::testing::TestStore::start().await;
    let dm = a.dm();
    for _ in 0..3 {
        dm.create_run("/project/p/branch/main", |id, counter| {
            let config = cairn_client::runconfig::RunConfig {
                id: id.to_string(),
                group: "/project/p/branch/main".into(),
                ..Default::default()
            };
            let run = crate::runservice::new_run(&config, counter, chrono::Utc::now());
            (config, run)
        })
        .await
        .expect("create");
    }
    let mut bytes = Vec::new();
    let blobs = memory_blobs();
    let mut s = Box::pin(dm.export(blobs.clone(), KEY.to_vec(), true));
    while let Some(chunk) = futures::StreamExt::next(&mut s).await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    let spool = tempfile::NamedTempFile::new().expect("spool");
    let mut v = Validator::new(spool.reopen().expect("reopen"), Some(KEY));
    v.push(&bytes).expect("valid");
    v.finish().expect("complete");

    // A second store already at counter 5 for the same root.
    let b = crate::datamanager::testing::TestStore::start().await;
    let db = b.dm();
    db.commit(
        vec![],
        vec![
            put(keys::counter("p"), b"5".to_vec()),
            put(keys::RUN_SEQ, b"5".to_vec()),
        ],
    )
    .await
    .expect("seed");
    let summary = db
        .import(&blobs, spool.path(), SegmentLimits::default())
        .await
        .expect("import");
    assert_eq!(summary.runs, 3);
    let page = db
        .list_runs(&cairn_client::api::ListRunsQuery::default())
        .await
        .expect("list");
    assert_eq!(page.runs.len(), 3);
    let next = db
        .create_run("/project/p/branch/main", |id, counter| {
            let config = cairn_client::runconfig::RunConfig {
                id: id.to_string(),
                group: "/project/p/branch/main".into(),
                ..Default::default()
            };
            let run = crate::runservice::new_run(&config, counter, chrono::Utc::now());
            (config, run)
        })
        .await
        .expect("create after import");
    assert_eq!(next.run.value.counter, 6, "the counter went backwards");
    assert_eq!(next.run.value.id, keys::run_id(6));
}

fn memory_blobs() -> Blobs {
    Blobs::from_store(std::sync::Arc::new(object_store::memory::InMemory::new()))
}

const GROUP: &str = "/project/p/branch/main";

/// A finished, archived run `seq` of `group` with its config (holding a secret) and one
/// event.
fn archived_run(seq: u64, group: &str) -> ArchivedRun {
    let id = keys::run_id(seq);
    let mut config = RunConfig {
        id: id.clone(),
        name: "ci".into(),
        group: group.into(),
        ..Default::default()
    };
    config.environment.insert("TOKEN".into(), "s3cret".into());
    let now = chrono::Utc::now();
    let mut run = crate::runservice::new_run(&config, seq, now);
    run.phase = RunPhase::Finished;
    run.result = RunResult::Success;
    run.archived = true;
    let events = vec![RunEvent {
        sequence: 0,
        run_id: id,
        group: group.into(),
        phase: RunPhase::Finished,
        result: RunResult::Success,
        time: now,
    }];
    ArchivedRun {
        run,
        config,
        events,
    }
}

/// `body` (lines without newlines) under a header of `version`, with a valid trailer.
fn signed(version: u32, body: &[String]) -> Vec<u8> {
    let header = format!(
        "{{\"format\":\"cairn-export\",\"version\":{version},\"revision\":7,\"redacted\":false}}\n"
    );
    let mut hash = Sha256::new();
    let mut mac = HmacSha256::new(KEY);
    let mut out = header.into_bytes();
    hash.update(&out);
    mac.update(&out);
    for line in body {
        let l = format!("{line}\n");
        hash.update(l.as_bytes());
        mac.update(l.as_bytes());
        out.extend_from_slice(l.as_bytes());
    }
    let trailer = Trailer {
        trailer: TrailerBody {
            entries: body.len() as u64,
            sha256: hex(&hash.finalize()),
            hmac: Some(hex(&mac.finalize())),
        },
    };
    out.extend_from_slice(&serde_json::to_vec(&trailer).expect("json"));
    out.push(b'\n');
    out
}

fn archived_line(a: &ArchivedRun) -> String {
    serde_json::to_string(&ArchivedLineRef { archived: a }).expect("json")
}

/// An export of `archived` runs only (and the run sequence), as the writer makes it.
fn export_of_archived(archived: impl IntoIterator<Item = ArchivedRun>) -> Vec<u8> {
    let (mut w, mut out) = ExportWriter::start(7, KEY, Some(false));
    w.entry("rs/seq/run".into(), "100000".into(), &mut out);
    for a in archived {
        w.archived(&a, &mut out);
    }
    out.extend_from_slice(&w.finish());
    out
}

#[test]
fn archived_runs_follow_the_entries_in_id_order_and_are_checked() {
    let a1 = archived_run(1, GROUP);
    let a2 = archived_run(2, GROUP);
    let good = export_of_archived([a1.clone(), a2.clone()]);
    assert_eq!(validate(&good, 100).expect("valid"), 3);

    let seq = r#"{"key":"rs/seq/run","value":"9"}"#.to_string();
    let mut bad_id = a2.clone();
    bad_id.run.id = "../x".into();
    bad_id.config.id = "../x".into();
    let mut running = a2.clone();
    running.run.phase = RunPhase::Running;
    let mut foreign_event = a2.clone();
    foreign_event.events[0].run_id = keys::run_id(7);
    let mut bad_task = a2.clone();
    bad_task
        .run
        .tasks
        .insert("../../etc".into(), Default::default());
    let cases: [(&str, u32, Vec<String>, &str); 8] = [
        (
            "out of order",
            2,
            vec![archived_line(&a2), archived_line(&a1)],
            "out of order",
        ),
        (
            "twice",
            2,
            vec![archived_line(&a1), archived_line(&a1)],
            "out of order",
        ),
        (
            "an entry after",
            2,
            vec![archived_line(&a1), seq.clone()],
            "out of order",
        ),
        ("an invalid id", 2, vec![archived_line(&bad_id)], "run id"),
        (
            "not finished",
            2,
            vec![archived_line(&running)],
            "cannot be archived",
        ),
        (
            "another run's event",
            2,
            vec![archived_line(&foreign_event)],
            "event",
        ),
        (
            "an invalid task id",
            2,
            vec![archived_line(&bad_task)],
            "task",
        ),
        (
            "in a version 1 export",
            1,
            vec![seq.clone(), archived_line(&a1)],
            "version 1",
        ),
    ];
    for (case, version, body, why) in cases {
        let err = validate(&signed(version, &body), 100).expect_err(case);
        assert!(err.to_string().contains(why), "{case}: {err}");
    }
    // Version 1, entries only, is still read.
    assert_eq!(validate(&signed(1, &[seq]), 100).expect("version 1"), 1);
}

#[test]
fn a_tampered_archived_run_fails_the_checksum() {
    let good = String::from_utf8(export_of_archived([archived_run(1, GROUP)])).expect("utf8");
    let tampered = good.replacen("\"name\":\"ci\"", "\"name\":\"cx\"", 1);
    assert_ne!(tampered, good);
    let err = validate(tampered.as_bytes(), 64).expect_err("tampered");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn an_event_keyed_by_no_run_or_another_run_is_refused() {
    let a = archived_run(1, GROUP);
    let event = serde_json::to_string(&a.events[0]).expect("json");
    let id = &a.run.id;
    for key in [
        format!("rs/event/{id}"),
        format!("rs/event/{id}/"),
        "rs/event/x/finished.success".to_string(),
        format!("rs/event/{}/finished.success", keys::run_id(2)),
    ] {
        let line = serde_json::to_string(&Entry {
            key: key.clone(),
            value: event.clone(),
        })
        .expect("json");
        assert!(validate(&signed(2, &[line]), 64).is_err(), "{key}");
    }
}

/// Archives `runs` of `dm` into one segment in `blobs`, as the archiver does.
async fn archive(dm: &Datamanager, blobs: &Blobs, runs: &[Versioned<Run>]) {
    let mut writer = SegmentWriter::new(SegmentLimits::default());
    for run in runs {
        let id = &run.value.id;
        let events = dm
            .scan(&keys::events_of(id), false)
            .await
            .expect("events")
            .iter()
            .map(|kv| {
                crate::datamanager::events::event_from(&kv.key, &kv.value, kv.mod_revision)
                    .expect("event")
            })
            .collect();
        let archived = ArchivedRun {
            run: run.value.clone(),
            config: dm.run_config(id).await.expect("config"),
            events,
        };
        writer.add(&archived).expect("added");
    }
    let (bytes, meta) = writer.finish().expect("finished");
    segments::put_segment(blobs, bytes, &meta)
        .await
        .expect("stored");
    dm.commit_segment(&meta, runs).await.expect("committed");
}

async fn export_bytes(dm: &Datamanager, blobs: &Blobs, include_secrets: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut s = Box::pin(dm.export(blobs.clone(), KEY.to_vec(), include_secrets));
    while let Some(chunk) = futures::StreamExt::next(&mut s).await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    bytes
}

fn spool_of(bytes: &[u8]) -> tempfile::NamedTempFile {
    let spool = tempfile::NamedTempFile::new().expect("spool");
    let mut v = Validator::new(spool.reopen().expect("reopen"), Some(KEY));
    v.push(bytes).expect("valid");
    v.finish().expect("complete");
    spool
}

/// Every run of an export by id: run, config and event phases, wherever it is.
fn runs_of_export(bytes: &[u8]) -> BTreeMap<String, (Run, RunConfig, Vec<String>, bool)> {
    /// Run, config, event phases, whether in an archived line.
    type Parts = (Option<Run>, Option<RunConfig>, Vec<String>, bool);
    let mut runs: BTreeMap<String, Parts> = BTreeMap::new();
    let text = std::str::from_utf8(bytes).expect("utf8");
    for line in text.lines().skip(1) {
        if line.starts_with(TRAILER_LINE) {
            break;
        }
        if line.starts_with(ARCHIVED_LINE) {
            let a: ArchivedLine = serde_json::from_str(line).expect("archived");
            let a = a.archived;
            let events = a
                .events
                .iter()
                .map(|e| e.phase.as_str().to_string())
                .collect();
            runs.insert(
                a.run.id.clone(),
                (Some(a.run), Some(a.config), events, true),
            );
            continue;
        }
        let e: Entry = serde_json::from_str(line).expect("entry");
        if let Some(id) = e.key.strip_prefix(keys::RUN) {
            runs.entry(id.into()).or_default().0 =
                Some(serde_json::from_str(&e.value).expect("run"));
        } else if let Some(id) = e.key.strip_prefix(keys::RUN_CONFIG) {
            runs.entry(id.into()).or_default().1 =
                Some(serde_json::from_str(&e.value).expect("config"));
        } else if let Some(rest) = e.key.strip_prefix(keys::EVENT) {
            let (id, _) = rest.split_once('/').expect("event key");
            let ev: RunEvent = serde_json::from_str(&e.value).expect("event");
            runs.entry(id.into())
                .or_default()
                .2
                .push(ev.phase.as_str().to_string());
        }
    }
    runs.into_iter()
        .map(|(id, (r, c, mut ev, archived))| {
            ev.sort();
            (id, (r.expect("run"), c.expect("config"), ev, archived))
        })
        .collect()
}

/// The runs held in `blobs`' recorded segments of `dm`, in segment order, each segment's
/// run count.
async fn segment_runs(dm: &Datamanager, blobs: &Blobs) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    for record in dm.segment_records().await.expect("records") {
        let (decoded, sha) = segments::read_segment(blobs, &record.value.key)
            .await
            .expect("segment");
        assert_eq!(sha, record.value.sha256);
        sizes.push(decoded.runs.len());
        ids.extend(decoded.runs.into_iter().map(|a| a.run.id));
    }
    (ids, sizes)
}

/// Deliverable 5: runs in segments (two of them overlapping), an archived run still in
/// the store, a finished and a queued one: exported, imported elsewhere, every run comes
/// back; the archived ones in new segments and not in the store, the others in the store;
/// the importing store's former segments are forgotten and deleted.
#[tokio::test]
async fn export_then_import_moves_archived_runs_into_segments_and_keeps_the_rest() {
    let a = TestStore::start().await;
    let (dm, blobs) = (a.dm(), memory_blobs());
    let mut finished = Vec::new();
    for _ in 0..5 {
        finished.push(testing::finished_run(&dm, GROUP).await.0);
    }
    let queued = dm
        .create_run(GROUP, |id, counter| {
            let config = RunConfig {
                id: id.to_string(),
                group: GROUP.into(),
                ..Default::default()
            };
            (
                config.clone(),
                crate::runservice::new_run(&config, counter, chrono::Utc::now()),
            )
        })
        .await
        .expect("queued");
    // Runs 1 and 3 in one segment, 2 in another (their ranges overlap).
    archive(&dm, &blobs, &[finished[0].clone(), finished[2].clone()]).await;
    archive(&dm, &blobs, std::slice::from_ref(&finished[1])).await;
    // Run 4 archived but still in the store.
    let mut flagged = finished[3].value.clone();
    flagged.archived = true;
    dm.update_run(&finished[3], &flagged)
        .await
        .expect("archived flag");
    let ids: Vec<String> = finished.iter().map(|r| r.value.id.clone()).collect();
    let exported = export_bytes(&dm, &blobs, true).await;

    // Another store, with a segment of its own that the import replaces.
    let b = TestStore::start().await;
    let (db, blobs_b) = (b.dm(), memory_blobs());
    let own = testing::finished_run(&db, "/project/q").await.0;
    archive(&db, &blobs_b, std::slice::from_ref(&own)).await;
    let replaced = db.segment_records().await.expect("records")[0]
        .value
        .clone();

    let spool = spool_of(&exported);
    let limits = SegmentLimits {
        max_runs: 2,
        max_bytes: 64 << 20,
    };
    let summary = db
        .import(&blobs_b, spool.path(), limits)
        .await
        .expect("import");
    assert_eq!(
        (summary.runs, summary.archived, summary.segments),
        (6, 4, 2)
    );

    let (in_segments, sizes) = segment_runs(&db, &blobs_b).await;
    assert_eq!(in_segments, ids[..4].to_vec(), "archived runs, in id order");
    assert_eq!(sizes, vec![2, 2]);
    for id in &ids[..4] {
        assert!(
            matches!(db.run(id).await, Err(DmError::NotFound { .. })),
            "{id}"
        );
        assert!(matches!(
            db.run_config(id).await,
            Err(DmError::NotFound { .. })
        ));
        assert!(
            db.scan(&keys::events_of(id), true)
                .await
                .expect("events")
                .is_empty()
        );
    }
    let listed: Vec<String> = db
        .list_runs(&cairn_client::api::ListRunsQuery::default())
        .await
        .expect("list")
        .runs
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut live = vec![ids[4].clone(), queued.run.value.id.clone()];
    live.reverse();
    assert_eq!(listed, live, "the store's runs, newest first");
    assert!(
        db.segment_record(&replaced.id)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        blobs_b.head(&replaced.key).await.expect("head").is_none(),
        "deleted"
    );
    let newest = b
        .node
        .kv()
        .get(keys::last(GROUP).into_bytes())
        .await
        .expect("read");
    assert_eq!(newest.expect("last").value, queued.run.value.id.as_bytes());

    // Exported again, every run is the same, wherever it lives now.
    let again = runs_of_export(&export_bytes(&db, &blobs_b, true).await);
    let before = runs_of_export(&exported);
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (id, (run, config, events, archived)) in &before {
        let (run2, config2, events2, archived2) = &again[id];
        assert_eq!((run, config, events), (run2, config2, events2), "run {id}");
        assert_eq!(
            *archived2,
            *archived || *id == ids[3],
            "run {id} in a segment"
        );
    }
}

#[tokio::test]
async fn archived_runs_configs_are_redacted_without_include_secrets() {
    let a = TestStore::start().await;
    let (dm, blobs) = (a.dm(), memory_blobs());
    let run = testing::finished_run(&dm, GROUP).await.0;
    let mut writer = SegmentWriter::new(SegmentLimits::default());
    let mut archived = archived_run(1, GROUP);
    archived.run = run.value.clone();
    archived.events.clear();
    writer.add(&archived).expect("added");
    let (bytes, meta) = writer.finish().expect("finished");
    segments::put_segment(&blobs, bytes, &meta)
        .await
        .expect("stored");
    dm.commit_segment(&meta, std::slice::from_ref(&run))
        .await
        .expect("committed");
    let redacted = String::from_utf8(export_bytes(&dm, &blobs, false).await).expect("utf8");
    assert!(redacted.contains(ARCHIVED_LINE), "{redacted}");
    assert!(!redacted.contains("s3cret"), "{redacted}");
    let full = String::from_utf8(export_bytes(&dm, &blobs, true).await).expect("utf8");
    assert!(full.contains("s3cret"));
}

#[tokio::test]
async fn many_archived_runs_make_several_segments_within_limits() {
    let st = TestStore::start().await;
    let (dm, blobs) = (st.dm(), memory_blobs());
    let bytes = export_of_archived((1..=25).map(|i| archived_run(i, GROUP)));
    let spool = spool_of(&bytes);
    let limits = SegmentLimits {
        max_runs: 4,
        max_bytes: 64 << 20,
    };
    let summary = dm
        .import(&blobs, spool.path(), limits)
        .await
        .expect("import");
    assert_eq!(summary.entries, 26);
    assert_eq!(
        (summary.runs, summary.archived, summary.segments),
        (25, 25, 7)
    );
    let (ids, sizes) = segment_runs(&dm, &blobs).await;
    assert_eq!(ids, (1..=25).map(keys::run_id).collect::<Vec<_>>());
    assert!(sizes.iter().all(|n| *n <= 4), "{sizes:?}");
    assert!(dm.scan(keys::RUN, true).await.expect("runs").is_empty());
    // By size too: a segment stops before it would pass max_bytes.
    let st = TestStore::start().await;
    let (dm, blobs) = (st.dm(), memory_blobs());
    let one = export_of_archived([archived_run(1, GROUP)]).len() as u64;
    let limits = SegmentLimits {
        max_runs: 1000,
        max_bytes: 3 * one,
    };
    let spool = spool_of(&bytes);
    let summary = dm
        .import(&blobs, spool.path(), limits)
        .await
        .expect("import");
    assert!(summary.segments > 1, "{summary:?}");
    for record in dm.segment_records().await.expect("records") {
        assert!(record.value.bytes <= limits.max_bytes, "{:?}", record.value);
    }
}

/// The export converts each segment's runs on blocking threads, 500 at a time and several
/// batches ahead: 2,345 runs in three segments (batches of 500, 500 / 500, 500 / 345)
/// come out as the very lines that were imported, in id order, and the export validates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_segments_in_many_batches_gives_back_the_imported_lines_in_order() {
    let st = TestStore::start().await;
    let (dm, blobs) = (st.dm(), memory_blobs());
    let input = export_of_archived((1..=2_345).map(|i| archived_run(i, GROUP)));
    let limits = SegmentLimits {
        max_runs: 1000,
        max_bytes: 64 << 20,
    };
    let spool = spool_of(&input);
    let summary = dm
        .import(&blobs, spool.path(), limits)
        .await
        .expect("import");
    assert_eq!((summary.archived, summary.segments), (2_345, 3));
    let output = export_bytes(&dm, &blobs, true).await;
    let archived_lines = |bytes: &[u8]| -> Vec<String> {
        std::str::from_utf8(bytes)
            .expect("utf8")
            .lines()
            .filter(|l| l.starts_with(ARCHIVED_LINE))
            .map(str::to_string)
            .collect()
    };
    let (want, got) = (archived_lines(&input), archived_lines(&output));
    assert_eq!(got.len(), 2_345);
    assert!(
        want == got,
        "the exported archived lines differ from the imported ones"
    );
    spool_of(&output);
}

#[tokio::test]
async fn a_run_both_in_the_store_and_archived_is_refused_before_anything_changes() {
    let st = TestStore::start().await;
    let (dm, blobs) = (st.dm(), memory_blobs());
    dm.commit(vec![], vec![put(keys::RUN_SEQ, b"5".to_vec())])
        .await
        .expect("seed");
    let a = archived_run(1, GROUP);
    let (mut w, mut out) = ExportWriter::start(7, KEY, Some(false));
    w.entry(
        keys::run(&a.run.id),
        serde_json::to_string(&a.run).expect("json"),
        &mut out,
    );
    w.archived(&a, &mut out);
    out.extend_from_slice(&w.finish());
    let spool = spool_of(&out);
    let err = dm
        .import(&blobs, spool.path(), SegmentLimits::default())
        .await
        .expect_err("twice");
    assert!(err.to_string().contains("both"), "{err}");
    let seq = st
        .node
        .kv()
        .get(keys::RUN_SEQ.as_bytes().to_vec())
        .await
        .expect("read");
    assert_eq!(seq.expect("kept").value, b"5", "nothing was cleared");
}

/// Not a test: `cargo test --release --lib exchange::tests::measure -- --ignored
/// --nocapture` prints the import and export rates and peak RSS growth for 20,000
/// archived runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_20k_archived_runs() {
    const N: u64 = 20_000;
    let peak = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let st = TestStore::start().await;
    let dir = tempfile::tempdir().expect("blob dir");
    let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("dir");
    let (dm, blobs) = (st.dm(), Blobs::from_store(std::sync::Arc::new(local)));
    let spool = tempfile::NamedTempFile::new().expect("spool");
    {
        let mut v = Validator::new(
            std::io::BufWriter::new(spool.reopen().expect("reopen")),
            Some(KEY),
        );
        let (mut w, header) = ExportWriter::start(7, KEY, Some(false));
        v.push(&header).expect("header");
        for i in 1..=N {
            let mut out = Vec::new();
            w.archived(&archived_run(i, GROUP), &mut out);
            v.push(&out).expect("line");
        }
        v.push(&w.finish()).expect("trailer");
        v.finish().expect("valid");
    }
    let size = std::fs::metadata(spool.path()).expect("size").len();
    let before = peak();
    let started = std::time::Instant::now();
    let summary = dm
        .import(&blobs, spool.path(), SegmentLimits::default())
        .await
        .expect("import");
    let took = started.elapsed().as_secs_f64();
    let after_import = peak();
    eprintln!(
        "import: {N} archived runs ({size} bytes, {} segments) in {took:.2} s = {:.0} runs/s; peak RSS {} → {} KiB (+{} KiB)",
        summary.segments,
        N as f64 / took,
        before,
        after_import,
        after_import - before
    );
    let started = std::time::Instant::now();
    let mut s = Box::pin(dm.export(blobs.clone(), KEY.to_vec(), true));
    let mut bytes = 0usize;
    while let Some(chunk) = futures::StreamExt::next(&mut s).await {
        bytes += chunk.expect("chunk").len();
    }
    let took = started.elapsed().as_secs_f64();
    let after_export = peak();
    eprintln!(
        "export: {N} archived runs ({bytes} bytes) in {took:.2} s = {:.0} runs/s; peak RSS {} → {} KiB (+{} KiB)",
        N as f64 / took,
        after_import,
        after_export,
        after_export - after_import
    );
}

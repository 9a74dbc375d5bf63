//! Bounded connections, bodies, streams and imports (H5, M1, M5, M6, L7).

use std::time::Duration;

use cairn_client::{ErrorCode, RunClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::poll::wait_for;
use crate::support::process::TOKEN;
use crate::support::runs::{create_request, task_id};
use crate::support::scripted::{Behaviour, Script, ScriptedExecutor};
use crate::support::service::ServiceProc;

const ONE_TASK: &str = r#"
runs:
  - name: hold
    tasks:
      - name: build
        runtime: { containers: [ { image: busybox } ] }
        steps: [ { run: make } ]
"#;

/// A node (with `extra` flags), a scripted executor `ex1` holding the one task of a run
/// in its first step, the run id and the task id.
async fn held_task(
    dir: &std::path::Path,
    extra: &[&str],
) -> (ServiceProc, ScriptedExecutor, String, String) {
    let node = ServiceProc::single_with(&dir.join("n"), extra);
    let mut script = Script::new("ex1");
    script.behaviour = |_| Behaviour::Hold;
    let ex = ScriptedExecutor::start(std::slice::from_ref(&node.url), TOKEN, script);
    let client = node.client();
    let created = client
        .create_run(&create_request("/project/p/branch/main", ONE_TASK))
        .await
        .unwrap();
    let run_id = created.runs[0].run.id.clone();
    let task = task_id(&created.runs[0], "build");
    wait_for(
        Duration::from_secs(60),
        "the executor to start the task",
        || {
            let started = ex.started();
            let task = task.clone();
            async move { started.contains(&task).then_some(()) }
        },
    )
    .await;
    (node, ex, run_id, task)
}

/// Sends `head` (a request without its body), then returns the status and body of the
/// response the server sends without waiting for the body (fails after 20 s).
async fn response_to_head(port: u16, head: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    read_response(&mut conn).await
}

/// Reads one HTTP/1.1 response with a `Content-Length` (fails after 20 s).
async fn read_response(conn: &mut (impl AsyncReadExt + Unpin)) -> (u16, String) {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).await.expect("read the response");
            assert!(n > 0, "connection closed before a whole response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, body[..len].to_string());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server answered without waiting for the body")
}

fn append_head(port: u16, executor: &str, task: &str, extra: &str) -> String {
    format!(
        "POST /api/v1/executors/{executor}/tasks/{task}/logs?step=0&offset=0 HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n{extra}\r\n"
    )
}

/// M1: a 100 MB log append to a task the caller does not own is refused before the body
/// is read (the body was buffered whole, up to 4 GiB, before the ownership check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_log_append_to_a_task_not_owned_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _ex, _run, task) = held_task(dir.path(), &[]).await;
    for (executor, task) in [
        ("nobody", task.as_str()),
        ("ex1", "6f1c1d2e-0000-4000-8000-000000000000"),
    ] {
        let head = append_head(node.port, executor, task, "Content-Length: 100000000\r\n");
        let (status, body) = response_to_head(node.port, &head).await;
        assert!(
            status == 404 || status == 403,
            "{executor}/{task}: {status} {body}"
        );
        let e: cairn_client::ApiError = serde_json::from_str(&body).expect("a JSON error");
        assert!(matches!(e.code, ErrorCode::NotFound | ErrorCode::Forbidden));
    }
}

/// M1: on a task the caller owns, a declared length over the chunk limit is a 413 before
/// the body is read, and a chunked body is a 413 once it passes the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_limit_log_append_is_refused_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _ex, _run, task) = held_task(dir.path(), &[]).await;
    let limit = cairn_client::api::MAX_LOG_CHUNK_BYTES;

    let head = append_head(
        node.port,
        "ex1",
        &task,
        &format!("Content-Length: {}\r\n", limit + 1),
    );
    let (status, body) = response_to_head(node.port, &head).await;
    assert_eq!(status, 413, "{body}");
    let e: cairn_client::ApiError = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(e.code, ErrorCode::TooLarge);

    // Chunked: the writer sends up to 16× the limit while the reader waits for the answer.
    let conn = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let head = append_head(node.port, "ex1", &task, "Transfer-Encoding: chunked\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let piece = vec![b'x'; 1 << 20];
        for _ in 0..16 * (limit >> 20) {
            wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await?;
            wr.write_all(&piece).await?;
            wr.write_all(b"\r\n").await?;
        }
        wr.write_all(b"0\r\n\r\n").await
    });
    let (status, body) = read_response(&mut rd).await;
    assert_eq!(status, 413, "{body}");
    writer.abort();
    // Nothing of it was stored.
    let log = node
        .client()
        .logs(&_run, &task, cairn_client::LogStep::Step(0), 0, false)
        .await
        .unwrap();
    let text = collect(log).await;
    assert!(text.len() < 1000, "{} bytes stored", text.len());
}

async fn collect(mut s: cairn_client::logs::LogStream) -> Vec<u8> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// L7: a log read from offset u64::MAX is a 416 with a JSON body (it was a 500), with or
/// without `follow`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_log_offset_is_a_416() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _ex, run, task) = held_task(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    for follow in [false, true] {
        let resp = http
            .get(format!(
                "{}/api/v1/runs/{run}/tasks/{task}/logs?step=0&offset={}&follow={follow}",
                node.url,
                u64::MAX
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 416, "follow={follow}");
        let e: cairn_client::ApiError = resp.json().await.expect("a JSON error");
        assert_eq!(e.code, ErrorCode::RangeNotSatisfiable);
    }
}

/// Opens a streaming GET and returns its response (status checked by the caller).
async fn open(http: &reqwest::Client, url: &str) -> reqwest::Response {
    http.get(url).bearer_auth(TOKEN).send().await.unwrap()
}

async fn assert_429(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status().as_u16(), 429, "{what}");
    let e: cairn_client::ApiError = resp.json().await.expect("a JSON error");
    assert_eq!(e.code, ErrorCode::TooManyRequests, "{what}");
}

/// M6: one token cannot hold more than the cap of SSE streams or log follows (each was
/// unbounded: 2,000 of each cost 130-140 MB and, for follows, half a core); a stream the
/// client drops frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_follows_beyond_the_per_credential_cap_are_429() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _ex, run, task) =
        held_task(dir.path(), &["--max-streams-per-credential", "3"]).await;
    let http = reqwest::Client::new();
    let events = format!("{}/api/v1/runs/events", node.url);
    let follow = format!(
        "{}/api/v1/runs/{run}/tasks/{task}/logs?step=0&follow=true",
        node.url
    );
    for (what, url) in [("events", &events), ("follow", &follow)] {
        let mut held = Vec::new();
        for _ in 0..3 {
            let resp = open(&http, url).await;
            assert_eq!(resp.status().as_u16(), 200, "{what}");
            held.push(resp);
        }
        assert_429(open(&http, url).await, what).await;
        // A dropped stream frees its slot once the server notices the disconnect.
        held.pop();
        let client = reqwest::Client::new();
        let reopened = wait_for(Duration::from_secs(40), "a freed slot", || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let resp = open(&client, &url).await;
                (resp.status().as_u16() == 200).then_some(resp)
            }
        })
        .await;
        held.push(reopened);
        assert_429(open(&http, url).await, what).await;
    }
    // Another kind has its own count: the executor's long poll still works meanwhile.
    let rc: RunClient = node.client();
    rc.executor_tasks("ex1", 1, Duration::from_secs(1))
        .await
        .unwrap();
}

/// A run of the one task with source `source`, run to success by a scripted executor;
/// returns once the run is archived.
async fn run_archived(node: &ServiceProc, source: cairn_client::runconfig::SourceRef) {
    let client = node.client();
    let mut req = create_request("/project/p/branch/main", ONE_TASK);
    req.source = Some(source);
    let created = client.create_run(&req).await.unwrap();
    let run_id = created.runs[0].run.id.clone();
    let _ex = ScriptedExecutor::start(
        std::slice::from_ref(&node.url),
        TOKEN,
        Script::new("ex-archive"),
    );
    crate::support::runs::wait_run(&client, &run_id, "the run to be archived", |r| {
        r.run.archived
    })
    .await;
}

/// M3 (issue 11 point 6): every directory the server made is 0700 and every file 0600
/// after a run (they were 0755/0644: `cairn.redb`, logs and source snapshots were
/// world-readable).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_and_directories_are_private_after_a_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let source = node
        .client()
        .upload_source(bytes::Bytes::from_static(&[0u8; 1024]))
        .await
        .unwrap();
    run_archived(&node, source).await;
    let mut seen = (0, 0);
    let mut todo = vec![node.data_dir.clone()];
    while let Some(d) = todo.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
        seen.0 += 1;
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                let mode = meta.permissions().mode() & 0o777;
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", e.path().display());
                seen.1 += 1;
            }
        }
    }
    assert!(node.data_dir.join("cairn.redb").exists());
    assert!(seen.0 > 3 && seen.1 > 3, "{seen:?}");
}

/// M3 (issue 11 point 6): an uploaded source snapshot goes with its run's other blobs: once
/// the run is archived and the snapshot is older than the blob TTL, housekeeping deletes
/// it (sources were never deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_runs_source_snapshot_is_deleted_with_its_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single_with(
        &dir.path().join("n"),
        &["--blob-ttl-secs", "3", "--housekeeping-secs", "1"],
    );
    let client = node.client();
    let source = client
        .upload_source(bytes::Bytes::from_static(&[0u8; 1024]))
        .await
        .unwrap();
    let cairn_client::runconfig::SourceRef::Snapshot { object } = source.clone() else {
        panic!("a snapshot: {source:?}");
    };
    run_archived(&node, source).await;
    wait_for(
        Duration::from_secs(60),
        "the snapshot to be deleted",
        || {
            let (client, object) = (client.clone(), object.clone());
            async move {
                match client.download_source(&object).await {
                    Err(e) if e.is_not_found() => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
}

/// The whole export (with or without secrets), as text.
async fn export_text(client: &RunClient, include_secrets: bool) -> String {
    use futures::StreamExt;
    let mut stream = client.export_with(include_secrets).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

/// Maintenance on, and the node switched (the scheduler stopped).
async fn maintenance_on(client: &RunClient) {
    client.set_maintenance(true).await.unwrap();
    wait_for(Duration::from_secs(60), "maintenance mode", || async {
        let st = client.maintenance().await.ok()?;
        st.nodes.iter().all(|n| n.maintenance).then_some(())
    })
    .await;
}

/// M5 and M3: an export carries no secret unless asked (`--include-secrets`), and an
/// export altered with its SHA-256 recomputed is refused by the HMAC (anyone could
/// recompute the checksum, so any token holder could rewrite history through import).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_hide_secrets_and_a_tampered_export_is_refused_by_its_hmac() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let mut req = create_request("/project/p/branch/main", ONE_TASK);
    req.environment
        .insert("DEPLOY_KEY".into(), "SECRET-VALUE-123".into());
    client.create_run(&req).await.unwrap();
    maintenance_on(&client).await;

    let redacted = export_text(&client, false).await;
    assert!(!redacted.contains("SECRET-VALUE-123"), "{redacted}");
    assert!(
        redacted.contains("DEPLOY_KEY"),
        "the name stays: {redacted}"
    );
    let full = export_text(&client, true).await;
    assert!(full.contains("SECRET-VALUE-123"));
    // Both import as they are.
    client.import(full.clone().into_bytes()).await.unwrap();

    // Alter a value and recompute the checksum: the trailer's sha256 matches again.
    let mut lines: Vec<String> = full.split_inclusive('\n').map(str::to_string).collect();
    let i = lines
        .iter()
        .position(|l| l.contains("SECRET-VALUE-123"))
        .unwrap();
    lines[i] = lines[i].replace("SECRET-VALUE-123", "ATTACKER-VALUE");
    let mut hash = Sha256::new();
    for l in &lines[..lines.len() - 1] {
        hash.update(l.as_bytes());
    }
    let sum: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let mut trailer: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    trailer["trailer"]["sha256"] = sum.into();
    *lines.last_mut().unwrap() = format!("{trailer}\n");
    let err = client
        .import(lines.concat().into_bytes())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("HMAC"), "{err}");
    assert!(!export_text(&client, true).await.contains("ATTACKER-VALUE"));
}

/// Issue 11: an export made without `--include-secrets` shows every secret as `***`;
/// importing it stored `***` as the secrets, silently. Now the import is refused (400,
/// naming `--include-secrets`) before anything changes, and the secrets stay; the export
/// with secrets imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redacted_export_is_refused_by_import_and_the_secrets_stay() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    let mut req = create_request("/project/p/branch/main", ONE_TASK);
    req.environment
        .insert("DEPLOY_KEY".into(), "SECRET-VALUE-123".into());
    client.create_run(&req).await.unwrap();
    maintenance_on(&client).await;

    let redacted = export_text(&client, false).await;
    assert!(redacted.contains("\"redacted\":true"), "{redacted}");
    let err = client
        .import(redacted.into_bytes())
        .await
        .expect_err("a redacted export");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("--include-secrets"), "{err}");
    let full = export_text(&client, true).await;
    assert!(
        full.contains("SECRET-VALUE-123"),
        "the secret stays: {full}"
    );
    let summary = client.import(full.into_bytes()).await.unwrap();
    assert_eq!(summary.runs, 1);
    assert!(
        export_text(&client, true)
            .await
            .contains("SECRET-VALUE-123")
    );
}

/// M5: a 64 MB import body of one line is refused once the line passes the cap, without
/// the server reading the rest (it was parsed in quadratic time: hours of CPU for 4 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_line_64_mb_import_is_refused_at_the_line_cap() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    maintenance_on(&client).await;
    let conn = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let total: usize = 64 << 20;
    let head = format!(
        "POST /api/v1/import HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {total}\r\n\r\n",
        node.port
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let piece = vec![b'x'; 1 << 20];
        let mut sent = 0;
        while sent < total {
            wr.write_all(&piece).await?;
            sent += piece.len();
        }
        Ok::<_, std::io::Error>(sent)
    });
    let (status, body) = read_response(&mut rd).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("longer than"), "{body}");
    writer.abort();
}

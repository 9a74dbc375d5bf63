//! The store CLI: a person forms a cluster and uses it; bad input is one readable line
//! and a non-zero exit, never a panic.

use std::process::Command;

use crate::support::process::{StoreProc, TOKEN, cairn_bin, free_port};

fn cairn(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cairn_bin())
        .args(args)
        .env("CAIRN_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "must fail: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(
        lines[0].starts_with("cairn: ") && lines[0].contains(needle),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn put_get_range_del_and_cluster_status_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let n = StoreProc::start(&dir.path().join("n"), free_port(), "redb", true, None);
    let ep = n.url.as_str();
    let (code, out, err) = cairn(&[
        "store",
        "put",
        "k/1",
        "one",
        "--endpoints",
        ep,
        "--token",
        TOKEN,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("OK (revision 2)"), "{out}");
    cairn(&[
        "store",
        "put",
        "k/2",
        "two",
        "--endpoints",
        ep,
        "--token",
        TOKEN,
    ]);
    let (_, out, _) = cairn(&[
        "store",
        "get",
        "k/",
        "--prefix",
        "--endpoints",
        ep,
        "--token",
        TOKEN,
    ]);
    assert_eq!(out, "k/1\none\nk/2\ntwo\n");
    let (_, out, _) = cairn(&[
        "store",
        "get",
        "k/1",
        "--rev",
        "2",
        "--endpoints",
        ep,
        "--token",
        TOKEN,
    ]);
    assert_eq!(out, "k/1\none\n");
    let (_, out, _) = cairn(&[
        "store",
        "range",
        "k/2",
        "\\0",
        "--endpoints",
        ep,
        "--token",
        TOKEN,
    ]);
    assert_eq!(out, "k/2\ntwo\n");
    let (_, out, _) = cairn(&[
        "store",
        "del",
        "k/",
        "--prefix",
        "--endpoints",
        ep,
        "--token",
        TOKEN,
    ]);
    assert_eq!(out.trim(), "2");
    let (code, out, err) = cairn(&[
        "store",
        "cluster",
        "status",
        "--endpoints",
        ep,
        "--token",
        TOKEN,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("leader") && out.contains(ep), "{out}");
}

#[test]
fn bad_invocations_fail_with_one_line() {
    let (code, _, err) = cairn(&[
        "store",
        "get",
        "k",
        "--endpoints",
        "http://127.0.0.1:1",
        "--token",
        "t",
    ]);
    assert_one_line_error(code, &err, "127.0.0.1:1");

    let dir = tempfile::tempdir().unwrap();
    let n = StoreProc::start(&dir.path().join("n"), free_port(), "redb", true, None);
    let (code, _, err) = cairn(&[
        "store",
        "get",
        "k",
        "--endpoints",
        &n.url,
        "--token",
        "wrong",
    ]);
    assert_one_line_error(code, &err, "invalid auth token");
    let (code, _, err) = cairn(&[
        "store",
        "get",
        "k",
        "--rev",
        "50",
        "--endpoints",
        &n.url,
        "--token",
        TOKEN,
    ]);
    assert_one_line_error(code, &err, "future revision");
    let (code, _, err) = cairn(&[
        "store",
        "cluster",
        "remove",
        "zz-not-hex",
        "--endpoints",
        &n.url,
        "--token",
        TOKEN,
    ]);
    assert_one_line_error(code, &err, "invalid member id");
    let (code, _, err) = cairn(&[
        "store",
        "cluster",
        "remove",
        "abc",
        "--endpoints",
        &n.url,
        "--token",
        TOKEN,
    ]);
    assert_one_line_error(code, &err, "not found");
    drop(n);

    // A data dir that belongs to a cluster is never initialized again.
    let data = dir.path().join("n");
    let listen = format!("127.0.0.1:{}", free_port());
    let data_s = data.to_string_lossy().into_owned();
    let (code, _, err) = cairn(&[
        "store",
        "serve",
        "--init",
        "--data-dir",
        &data_s,
        "--listen",
        &listen,
        "--token",
        TOKEN,
    ]);
    assert_one_line_error(code, &err, "already belongs to a cluster");
    // An empty data dir without --init or --join says what to do.
    let empty = dir.path().join("empty").to_string_lossy().into_owned();
    let (code, _, err) = cairn(&[
        "store",
        "serve",
        "--data-dir",
        &empty,
        "--listen",
        &listen,
        "--token",
        TOKEN,
    ]);
    assert_one_line_error(code, &err, "--init");
    let (code, _, err) = cairn(&[
        "store",
        "serve",
        "--data-dir",
        &empty,
        "--listen",
        &listen,
        "--token",
        TOKEN,
        "--engine",
        "leveldb",
    ]);
    assert_one_line_error(code, &err, "unknown engine");
    let (code, _, err) = cairn(&[
        "store",
        "serve",
        "--init",
        "--data-dir",
        &empty,
        "--listen",
        "0.0.0.0:0",
        "--token",
        TOKEN,
        "--no-client-auth",
    ]);
    assert_one_line_error(code, &err, "loopback");
}

#[test]
fn snapshot_save_and_offline_restore_make_a_new_cluster_with_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let n = StoreProc::start(&dir.path().join("n"), free_port(), "redb", true, None);
    for i in 0..20 {
        cairn(&[
            "store",
            "put",
            &format!("s/{i:02}"),
            &format!("v{i}"),
            "--endpoints",
            &n.url,
            "--token",
            TOKEN,
        ]);
    }
    let file = dir.path().join("backup.snap");
    let file_s = file.to_string_lossy().into_owned();
    let (code, out, err) = cairn(&[
        "store",
        "snapshot",
        "save",
        &file_s,
        "--endpoints",
        &n.url,
        "--token",
        TOKEN,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revision 21"), "{out}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old_cluster = rt.block_on(n.client().status()).unwrap().header.cluster_id;
    drop(n);

    // A corrupted backup is refused.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = dir.path().join("bad.snap");
    std::fs::write(&bad, &bytes).unwrap();
    let bad_dir = dir
        .path()
        .join("bad-restore")
        .to_string_lossy()
        .into_owned();
    let (code, _, err) = cairn(&[
        "store",
        "snapshot",
        "restore",
        &bad.to_string_lossy(),
        "--data-dir",
        &bad_dir,
    ]);
    assert_one_line_error(code, &err, "checksum");

    let restored = dir.path().join("restored");
    let (code, out, err) = cairn(&[
        "store",
        "snapshot",
        "restore",
        &file_s,
        "--data-dir",
        &restored.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored revision 21"), "{out}");
    let r = StoreProc::start(&restored, free_port(), "redb", true, None);
    let (_, out, _) = cairn(&[
        "store",
        "get",
        "s/",
        "--prefix",
        "--endpoints",
        &r.url,
        "--token",
        TOKEN,
    ]);
    assert_eq!(out.lines().count(), 40, "{out}");
    assert!(out.starts_with("s/00\nv0\n"));
    let (_, out, _) = cairn(&[
        "store",
        "put",
        "after",
        "x",
        "--endpoints",
        &r.url,
        "--token",
        TOKEN,
    ]);
    assert!(
        out.contains("revision 22"),
        "the restored store continues its revisions: {out}"
    );
    let new_cluster = rt.block_on(r.client().status()).unwrap().header.cluster_id;
    assert_ne!(new_cluster, old_cluster, "a restore makes a new cluster id");

    // A node joining the restored one gets the restored data, not only the entries of
    // the new log (which starts after it): it starts from a snapshot.
    let joined = StoreProc::start(
        &dir.path().join("joined"),
        free_port(),
        "redb",
        false,
        Some(&r.url),
    );
    let jc = joined.client();
    let synced = rt.block_on(async {
        for _ in 0..600 {
            let req = cairn_client::etcd::RangeRequest {
                key: "s/".into(),
                range_end: "s0".into(),
                serializable: true,
                ..Default::default()
            };
            if let Ok(resp) = jc.range(&req).await
                && resp.kvs.len() == 20
                && resp.header.revision.0 == 22
            {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    });
    assert!(
        synced,
        "the joined node has the restored keys at revision 22"
    );
}

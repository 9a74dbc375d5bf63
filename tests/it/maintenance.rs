//! Maintenance mode, export and import against real `cairn serve` processes: an export
//! imported into a fresh node gives back the same runs and events and ids go on after
//! them; import is refused outside maintenance, and a truncated or altered export is
//! refused with nothing changed; an export taken while runs are created is one
//! revision; on a 3-node cluster every node switches, executors stop getting tasks, and
//! turning maintenance off resumes the runs with nothing lost.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_client::api::{ListRunsQuery, RunAction};
use cairn_client::run::{Run, RunEvent, RunPhase, RunResult, RunTaskStatus};
use cairn_client::runconfig::RunConfig;
use cairn_client::{ErrorCode, RunClient};
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::poll::wait_for;
use crate::support::process::TOKEN;
use crate::support::runs::{GROUP, api_error, create, one_task, wait_run, wait_run_phase};
use crate::support::scripted::{Behaviour, Script, ScriptedExecutor};
use crate::support::service::{ServiceCluster, ServiceProc};

/// Generous bound for anything the nodes, the scheduler and an executor must do.
const LONG: Duration = Duration::from_secs(120);

/// Every run (no test here makes more than a page), oldest first, with its config.
async fn snapshot(client: &RunClient) -> Vec<(Run, RunConfig)> {
    let page = client
        .list_runs(&ListRunsQuery {
            asc: true,
            limit: Some(100),
            ..ListRunsQuery::default()
        })
        .await
        .unwrap();
    assert!(page.next.is_none(), "more runs than one page");
    let mut out = Vec::new();
    for listed in page.runs {
        let got = client.run(&listed.id).await.unwrap();
        out.push((got.run, got.run_config));
    }
    out
}

/// Waits until `client` shows maintenance requested (or not) and `nodes` nodes all in
/// that mode.
async fn wait_mode(client: &RunClient, nodes: usize, on: bool) {
    wait_for(
        LONG,
        &format!("{nodes} node(s) to show maintenance = {on}"),
        || async {
            let st = client.maintenance().await.ok()?;
            (st.requested == on
                && st.nodes.len() == nodes
                && st.nodes.iter().all(|n| n.maintenance == on))
            .then_some(())
        },
    )
    .await;
}

/// Turns maintenance on or off through `client`, then waits as [`wait_mode`] does.
async fn set_mode(client: &RunClient, nodes: usize, on: bool) {
    client.set_maintenance(on).await.unwrap();
    wait_mode(client, nodes, on).await;
}

/// The whole export, secrets included (a redacted export is not imported), as bytes.
async fn export(client: &RunClient) -> Vec<u8> {
    let mut stream = client.export_with(true).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// An export taken apart: its header, its entries (key, value) and its trailer, after
/// checking that every line parses, the entries are in strictly increasing key order,
/// and the trailer's count and checksum match.
struct Parsed {
    header: Value,
    entries: Vec<(String, String)>,
    /// The runs archived in segments (`{"archived":{run, config, events}}` lines, after
    /// the entries, in id order).
    archived: Vec<Value>,
}

fn parse_export(bytes: &[u8]) -> Parsed {
    let text = std::str::from_utf8(bytes).expect("an export is UTF-8");
    assert!(text.ends_with('\n'), "an export ends with a newline");
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    assert!(lines.len() >= 2, "an export has a header and a trailer");
    let header: Value = serde_json::from_str(lines[0]).expect("the header parses");
    assert_eq!(header["format"], "cairn-export", "{header}");
    assert_eq!(header["version"], 2, "{header}");
    assert!(header["revision"].as_i64().is_some(), "{header}");
    let trailer: Value = serde_json::from_str(lines[lines.len() - 1]).expect("the trailer parses");
    let mut hash = Sha256::new();
    hash.update(lines[0].as_bytes());
    let mut entries = Vec::new();
    let mut archived: Vec<Value> = Vec::new();
    for line in &lines[1..lines.len() - 1] {
        hash.update(line.as_bytes());
        let e: Value = serde_json::from_str(line).expect("every entry parses");
        if let Some(a) = e.get("archived") {
            let id = a["run"]["id"].as_str().expect("an archived run's id");
            if let Some(prev) = archived.last() {
                assert!(
                    prev["run"]["id"].as_str() < Some(id),
                    "archived runs out of order"
                );
            }
            archived.push(a.clone());
            continue;
        }
        assert!(archived.is_empty(), "an entry after the archived runs");
        let key = e["key"].as_str().expect("a string key").to_string();
        let value = e["value"].as_str().expect("a string value").to_string();
        if let Some((prev, _)) = entries.last() {
            assert!(*prev < key, "{prev:?} before {key:?}: keys out of order");
        }
        entries.push((key, value));
    }
    let sum: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        trailer["trailer"]["entries"].as_u64(),
        Some((entries.len() + archived.len()) as u64),
        "{trailer}"
    );
    assert_eq!(trailer["trailer"]["sha256"].as_str(), Some(sum.as_str()));
    Parsed {
        header,
        entries,
        archived,
    }
}

/// The export's run events, with their sequence (a store revision) left out.
fn exported_events(p: &Parsed) -> Vec<RunEvent> {
    let mut events: Vec<RunEvent> = p
        .entries
        .iter()
        .filter(|(k, _)| k.starts_with("rs/event/"))
        .map(|(_, v)| serde_json::from_str(v).expect("an event parses"))
        .collect();
    for e in &mut events {
        e.sequence = 0;
    }
    sort_events(&mut events);
    events
}

fn sort_events(events: &mut [RunEvent]) {
    events.sort_by(|a, b| {
        (&a.run_id, a.time, a.phase.as_str(), a.result.as_str()).cmp(&(
            &b.run_id,
            b.time,
            b.phase.as_str(),
            b.result.as_str(),
        ))
    });
}

/// The first `n` events a replay from the start shows, sequences left out, sorted.
async fn replay(client: &RunClient, n: usize) -> Vec<RunEvent> {
    let mut stream = Box::pin(client.run_events(Some(0)));
    let mut out = Vec::new();
    tokio::time::timeout(LONG, async {
        while out.len() < n {
            let mut ev = stream
                .next()
                .await
                .expect("the event stream goes on")
                .unwrap();
            ev.sequence = 0;
            out.push(ev);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} events within {LONG:?}: got {out:?}"));
    sort_events(&mut out);
    out
}

// --- 1. round trip -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imported_into_a_fresh_node_gives_the_same_runs_and_ids_go_on_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let a = ServiceProc::single(&dir.path().join("a"));
    let ca = a.client();
    let mut script = Script::new("ex1");
    script.behaviour = |name| {
        if name == "bad" {
            Behaviour::Fail
        } else {
            Behaviour::Succeed
        }
    };
    let mut ex = ScriptedExecutor::start(std::slice::from_ref(&a.url), TOKEN, script);

    // Finished success, finished failed.
    let ok = create(&ca, GROUP, &one_task("ok")).await.run.id;
    let done = wait_run_phase(&ca, &ok, RunPhase::Finished).await;
    assert_eq!(done.run.result, RunResult::Success);
    let bad = create(&ca, GROUP, &one_task("bad")).await.run.id;
    let done = wait_run_phase(&ca, &bad, RunPhase::Finished).await;
    assert_eq!(done.run.result, RunResult::Failed);
    for id in [&ok, &bad] {
        wait_run(&ca, id, "archived", |r| r.run.archived).await;
    }

    // Without an executor: one run running (its task waiting), one queued behind it and
    // cancelled, one still queued.
    ex.kill();
    ca.delete_executor(&ex.id).await.unwrap();
    wait_for(LONG, "no executor registered", || async {
        ca.executors().await.ok().filter(|e| e.executors.is_empty())
    })
    .await;
    let waiting = create(&ca, GROUP, &one_task("ok")).await.run.id;
    wait_run_phase(&ca, &waiting, RunPhase::Running).await;
    let cancelled = create(&ca, GROUP, &one_task("ok")).await.run.id;
    assert_eq!(
        ca.run(&cancelled).await.unwrap().run.phase,
        RunPhase::Queued
    );
    ca.run_action(&cancelled, RunAction::Cancel).await.unwrap();
    wait_run_phase(&ca, &cancelled, RunPhase::Cancelled).await;
    let queued = create(&ca, GROUP, &one_task("ok")).await.run.id;
    assert_eq!(ca.run(&queued).await.unwrap().run.phase, RunPhase::Queued);

    let before = snapshot(&ca).await;
    assert_eq!(
        before.iter().map(|(r, _)| r.id.clone()).collect::<Vec<_>>(),
        vec![ok, bad, waiting.clone(), cancelled, queued],
    );

    // The export, taken in maintenance (the scheduler holds still) and again outside it.
    set_mode(&ca, 1, true).await;
    let bytes = export(&ca).await;
    set_mode(&ca, 1, false).await;
    assert_eq!(snapshot(&ca).await, before, "maintenance changed nothing");
    let parsed = parse_export(&bytes);
    let events = exported_events(&parsed);
    assert!(events.len() >= 5, "{events:?}");
    assert_eq!(
        replay(&ca, events.len()).await,
        events,
        "the export holds node A's events"
    );

    // Fresh node B: import only once B has switched.
    let b = ServiceProc::single(&dir.path().join("b"));
    let cb = b.client();
    set_mode(&cb, 1, true).await;
    let summary = cb.import(bytes.clone()).await.unwrap();
    assert_eq!(summary.runs, 5);
    assert_eq!(
        summary.entries,
        (parsed.entries.len() + parsed.archived.len()) as u64
    );
    set_mode(&cb, 1, false).await;

    let after = snapshot(&cb).await;
    assert_eq!(after.len(), before.len());
    for ((ra, ca_), (rb, cb_)) in before.iter().zip(&after) {
        assert_eq!(rb, ra, "run {} on B", ra.id);
        assert_eq!(cb_, ca_, "run config {} on B", ra.id);
    }
    let statuses = |runs: &[(Run, RunConfig)]| -> Vec<Vec<RunTaskStatus>> {
        runs.iter()
            .map(|(r, _)| r.tasks.values().map(|t| t.status).collect())
            .collect()
    };
    assert_eq!(statuses(&after), statuses(&before));

    // B replays the imported events of the runs in its store (with B's own sequences);
    // the archived runs went into segments on import with their events, which B's
    // export holds.
    let in_store = |e: &RunEvent| before.iter().any(|(r, _)| r.id == e.run_id && !r.archived);
    let (store_events, archived_events): (Vec<_>, Vec<_>) =
        events.iter().cloned().partition(in_store);
    assert_eq!(replay(&cb, store_events.len()).await, store_events);
    let again = parse_export(&export(&cb).await);
    let mut segment_events: Vec<RunEvent> = again
        .archived
        .iter()
        .flat_map(|a| serde_json::from_value::<Vec<RunEvent>>(a["events"].clone()).unwrap())
        .map(|e| RunEvent { sequence: 0, ..e })
        .collect();
    sort_events(&mut segment_events);
    assert_eq!(segment_events, archived_events);

    // A new run on B comes after every imported one.
    let new = create(&cb, GROUP, &one_task("ok")).await.run;
    for (r, _) in &before {
        assert!(new.id > r.id, "new id {} after {}", new.id, r.id);
        assert!(
            new.counter > r.counter,
            "new counter {} after {}",
            new.counter,
            r.counter
        );
    }
    assert_eq!(
        new.counter,
        before.iter().map(|(r, _)| r.counter).max().unwrap() + 1
    );
}

// --- 2. import outside maintenance ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_outside_maintenance_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    for group in [GROUP, "/project/p2/branch/main"] {
        let id = create(&client, group, &one_task("ok")).await.run.id;
        wait_run_phase(&client, &id, RunPhase::Running).await;
    }
    let before = snapshot(&client).await;
    let bytes = export(&client).await;
    parse_export(&bytes);

    let e = api_error(client.import(bytes.clone()).await);
    assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
    // Nor into a fresh node that is not in maintenance.
    let fresh = ServiceProc::single(&dir.path().join("fresh"));
    let e = api_error(fresh.client().import(bytes).await);
    assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
    assert!(snapshot(&fresh.client()).await.is_empty());

    assert_eq!(snapshot(&client).await, before);
}

// --- 3. truncated or corrupted exports -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_altered_export_is_refused_with_nothing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    for group in [GROUP, "/project/p2/branch/main", GROUP] {
        create(&client, group, &one_task("ok")).await;
    }
    set_mode(&client, 1, true).await;
    // The node reports maintenance only once its scheduler has stopped and released its
    // lock: from then on nothing writes, and two exports are taken at the same revision.
    let first = parse_export(&export(&client).await);
    let good = export(&client).await;
    let parsed = parse_export(&good);
    assert_eq!(
        first.header["revision"], parsed.header["revision"],
        "the store moved after the node reported maintenance"
    );
    let text = String::from_utf8(good.clone()).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    assert!(lines.len() > 6, "{text}");

    let mut bad: Vec<(&str, Vec<u8>)> = Vec::new();
    // Cut in the middle of an entry line.
    let mid = lines[..3].concat().len() + lines[3].len() / 2;
    bad.push(("cut mid-line", good[..mid].to_vec()));
    // Cut at a line boundary: everything but the trailer.
    bad.push(("no trailer", lines[..lines.len() - 1].concat().into_bytes()));
    // One value altered, still valid JSON (and still a valid run config).
    let i = lines
        .iter()
        .position(|l| l.contains("\"rs/runconfig/"))
        .expect("a run config line");
    let mut e: Value = serde_json::from_str(lines[i]).unwrap();
    let v = e["value"].as_str().unwrap().replace("\"ci\"", "\"cj\"");
    assert_ne!(
        v,
        e["value"].as_str().unwrap(),
        "the run name is in the config"
    );
    e["value"] = Value::String(v);
    let mut altered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    altered[i] = format!("{e}\n");
    bad.push(("a value altered", altered.concat().into_bytes()));
    // Two entry lines swapped.
    let mut swapped: Vec<&str> = lines.clone();
    swapped.swap(1, 2);
    bad.push(("lines swapped", swapped.concat().into_bytes()));

    for (what, body) in bad {
        let e = api_error(client.import(body).await);
        assert_eq!(e.code, ErrorCode::BadRequest, "{what}: {e:?}");
        // Nothing changed: the same entries are exported.
        let now = parse_export(&export(&client).await);
        assert_eq!(now.entries, parsed.entries, "{what} changed the data");
        assert_eq!(now.header["revision"], parsed.header["revision"], "{what}");
    }

    // Maintenance can end (no half-applied import holds it), and the runs are there.
    let before = parsed
        .entries
        .iter()
        .filter(|(k, _)| k.starts_with("rs/run/"))
        .map(|(k, _)| k["rs/run/".len()..].to_string())
        .collect::<Vec<_>>();
    set_mode(&client, 1, false).await;
    let after = snapshot(&client).await;
    assert_eq!(
        after.iter().map(|(r, _)| r.id.clone()).collect::<Vec<_>>(),
        before
    );
    // The good export is still accepted.
    set_mode(&client, 1, true).await;
    let summary = client.import(good).await.unwrap();
    assert_eq!(summary.runs, 3);
    set_mode(&client, 1, false).await;
}

// --- 4. an export during creations ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_taken_while_runs_are_created_is_one_consistent_revision() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServiceProc::single(&dir.path().join("n"));
    let client = node.client();
    const TOTAL: usize = 30;
    let creator = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                let group = format!("/project/p{}/branch/main", i % 3);
                create(&client, &group, &one_task("ok")).await;
            }
        })
    };
    let mut exports = Vec::new();
    while !creator.is_finished() || exports.is_empty() {
        exports.push(export(&client).await);
    }
    creator.await.unwrap();
    exports.push(export(&client).await);

    let mut sizes = Vec::new();
    for bytes in &exports {
        let p = parse_export(bytes);
        let map: BTreeMap<&str, &str> = p
            .entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let seq: u64 = map
            .get("rs/seq/run")
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut runs = 0;
        for (k, v) in &p.entries {
            let Some(id) = k.strip_prefix("rs/run/") else {
                continue;
            };
            runs += 1;
            let run: Run = serde_json::from_str(v).unwrap();
            assert_eq!(run.id, id);
            assert!(
                map.contains_key(format!("rs/runconfig/{id}").as_str()),
                "run {id} without its config"
            );
            assert!(
                map.keys()
                    .any(|k| k.starts_with(&format!("rs/event/{id}/"))),
                "run {id} without its creation event"
            );
            let counter: u64 = map
                .get(format!("rs/counter/{}", run.root_group()).as_str())
                .unwrap_or_else(|| panic!("no counter for run {id}'s root"))
                .trim()
                .parse()
                .unwrap();
            assert!(counter >= run.counter, "run {id}: counter {counter}");
            assert!(
                seq >= id.parse::<u64>().unwrap(),
                "run {id}: sequence {seq}"
            );
        }
        // Every config has its run too.
        for k in map.keys() {
            if let Some(id) = k.strip_prefix("rs/runconfig/") {
                assert!(map.contains_key(format!("rs/run/{id}").as_str()), "{k}");
            }
        }
        sizes.push(runs);
    }
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert_eq!(*sizes.last().unwrap(), TOTAL);
}

// --- 5. a 3-node cluster -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_every_node_switches_executors_get_nothing_and_runs_resume_afterwards() {
    let cluster = ServiceCluster::start_sharing_objects(3);
    let client = cluster.client();
    let mut script = Script::new("ex1");
    script.behaviour = |name| {
        if name == "hold" {
            Behaviour::Hold
        } else {
            Behaviour::Succeed
        }
    };
    // Reports are retried (for 2 minutes) while maintenance lasts.
    script.report_attempts = 1200;
    let ex = ScriptedExecutor::start(&cluster.urls(), TOKEN, script);

    let held = create(&client, GROUP, &one_task("hold")).await.run.id;
    wait_run(&client, &held, "its task running", |r| {
        r.run
            .tasks
            .values()
            .all(|t| t.status == RunTaskStatus::Running)
    })
    .await;
    // Queued behind the held run: its task is not handed out before the switch.
    let behind = create(&client, GROUP, &one_task("ok")).await.run.id;
    let other = create(&client, "/project/p2/branch/main", &one_task("ok"))
        .await
        .run
        .id;
    let other_done = wait_run_phase(&client, &other, RunPhase::Finished).await;
    assert_eq!(other_done.run.result, RunResult::Success);
    assert_eq!(
        client.run(&behind).await.unwrap().run.phase,
        RunPhase::Queued
    );
    let started_before = ex.started();
    assert_eq!(started_before.len(), 2, "{started_before:?}");

    // On through one node: every node switches, as every node sees.
    cluster.nodes[1]
        .client()
        .set_maintenance(true)
        .await
        .unwrap();
    for n in &cluster.nodes {
        wait_mode(&n.client(), 3, true).await;
    }
    for n in &cluster.nodes {
        let c = n.client();
        let e = api_error(c.list_runs(&ListRunsQuery::default()).await);
        assert_eq!(e.code, ErrorCode::Unavailable, "{}: {e:?}", n.url);
        let e = api_error(c.executor_tasks(&ex.id, 0, Duration::from_secs(1)).await);
        assert_eq!(e.code, ErrorCode::Unavailable, "{}: {e:?}", n.url);
    }
    // The held task finishes meanwhile: its reports wait for the end of maintenance.
    ex.release();
    for n in &cluster.nodes {
        let e = api_error(n.client().run(&held).await);
        assert_eq!(e.code, ErrorCode::Unavailable, "{}: {e:?}", n.url);
    }
    assert_eq!(
        ex.started(),
        started_before,
        "no task handed out in maintenance"
    );

    // Off through another node: every node switches back and the runs go on.
    cluster.nodes[2]
        .client()
        .set_maintenance(false)
        .await
        .unwrap();
    for n in &cluster.nodes {
        wait_mode(&n.client(), 3, false).await;
    }
    for id in [&held, &behind] {
        let done = wait_run_phase(&client, id, RunPhase::Finished).await;
        assert_eq!(done.run.result, RunResult::Success, "run {id}");
    }
    let started = ex.started();
    assert_eq!(started.len(), 3, "each task once: {started:?}");
    assert_eq!(&started[..2], &started_before[..]);
    assert!(ex.reoffered().is_empty(), "{:?}", ex.reoffered());

    // Nothing lost: all three runs, on every node.
    for n in &cluster.nodes {
        let ids: Vec<String> = snapshot(&n.client())
            .await
            .into_iter()
            .map(|(r, _)| r.id)
            .collect();
        let mut want = vec![held.clone(), behind.clone(), other.clone()];
        want.sort();
        assert_eq!(ids, want, "{}", n.url);
    }
}

//! Filling the scheduler bench's store by import instead of through the API
//! (`CAIRN_BENCH_SCHED_FILL=import`): building 100k finished runs through the scheduler
//! takes over an hour on a 2-core machine, an import of them ~1.5 minutes.
//!
//! The imported runs are copies of one real run: a one-task run made and archived through
//! the API just before, exported, then cloned N times with fresh run ids, counters, task
//! ids and the fill's groups, so every copy has the shape the scheduler leaves behind. The
//! server's current contents are exported and imported back with the copies (in
//! maintenance mode), so nothing that was there is lost, except that running tasks of
//! running runs are failed by the import (the bench's two held runs: the caller makes
//! new ones).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn::datamanager::exchange::ExportWriter;
use cairn_client::RunClient;
use futures::StreamExt;
use serde::Deserialize;

/// One object of an export stream.
#[derive(Deserialize)]
struct Entry {
    key: String,
    value: String,
}

/// Exports the server's contents, adds `n` copies of run `template` (ids after the run
/// sequence, counters after the fill root group's, groups `<group_prefix><i % groups>`),
/// and imports the result. Returns the import's wall time.
pub async fn import_copies(
    client: &RunClient,
    template: &str,
    n: usize,
    group_prefix: &str,
    groups: usize,
) -> anyhow::Result<Duration> {
    let mut stream = client.export_with(true).await.context("exporting")?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.context("reading the export")?);
    }
    let text = String::from_utf8(bytes).context("the export is not UTF-8")?;
    let mut lines = text.lines();
    let header = lines.next().context("empty export")?.to_string();
    let mut entries = BTreeMap::new();
    for line in lines {
        if line.starts_with("{\"trailer\"") {
            break;
        }
        let e: Entry = serde_json::from_str(line).context("an export line")?;
        entries.insert(e.key, e.value);
    }
    let run_key = format!("rs/run/{template}");
    let run: serde_json::Value = serde_json::from_str(
        entries
            .get(&run_key)
            .with_context(|| format!("{run_key} is not in the export"))?,
    )?;
    let config: serde_json::Value = serde_json::from_str(
        entries
            .get(&format!("rs/runconfig/{template}"))
            .context("the template's run config is not in the export")?,
    )?;
    let task_ids: Vec<String> = run["tasks"]
        .as_object()
        .context("the template run has no tasks")?
        .keys()
        .cloned()
        .collect();
    let root = cairn_client::run::root_group(group_prefix).to_string();
    let number = |key: &str| -> anyhow::Result<u64> {
        entries.get(key).map_or(Ok(0), |v| {
            v.trim().parse().context(format!("{key} = {v:?}"))
        })
    };
    let seq = number("rs/seq/run")?;
    let counter_key = format!("rs/counter/{root}");
    let counter = number(&counter_key)?;
    for i in 1..=n as u64 {
        let id = format!("{:016}", seq + i);
        let group = format!("{group_prefix}{:03}", i as usize % groups.max(1));
        let mut r = run.clone();
        r["id"] = id.clone().into();
        r["counter"] = (counter + i).into();
        r["group"] = group.clone().into();
        let mut c = config.clone();
        c["id"] = id.clone().into();
        c["group"] = group.into();
        let (mut r, mut c) = (r.to_string(), c.to_string());
        for t in &task_ids {
            let fresh = uuid::Uuid::new_v4().to_string();
            r = r.replace(t.as_str(), &fresh);
            c = c.replace(t.as_str(), &fresh);
        }
        entries.insert(format!("rs/run/{id}"), r);
        entries.insert(format!("rs/runconfig/{id}"), c);
    }
    entries.insert("rs/seq/run".into(), (seq + n as u64).to_string());
    entries.insert(counter_key, (counter + n as u64).to_string());

    let revision = serde_json::from_str::<serde_json::Value>(&header)?["revision"]
        .as_i64()
        .context("the export header has no revision")?;
    // Signed with the key of the token the bench's servers run with (scheduler.rs).
    let key = cairn::datamanager::exchange::export_key(b"cairn-bench-token");
    let (mut writer, mut out) = ExportWriter::start(revision, &key, Some(false));
    for (key, value) in entries {
        writer.entry(key, value, &mut out);
    }
    out.extend_from_slice(&writer.finish());

    set_maintenance(client, true).await?;
    let started = Instant::now();
    let imported = client.import(out).await;
    let took = started.elapsed();
    set_maintenance(client, false).await?;
    let imported = imported.context("importing")?;
    eprintln!(
        "bench: scheduler: imported {} entries ({} runs) in {:.1} s",
        imported.entries,
        imported.runs,
        took.as_secs_f64()
    );
    Ok(took)
}

/// Turns maintenance on or off and waits until every node has switched and, when off,
/// until a scheduler is active again.
async fn set_maintenance(client: &RunClient, on: bool) -> anyhow::Result<()> {
    client.set_maintenance(on).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let switched = client
            .maintenance()
            .await
            .is_ok_and(|s| s.nodes.iter().all(|n| n.maintenance == on));
        let scheduling = on || client.cluster().await.is_ok_and(|c| c.scheduler_active);
        if switched && scheduling {
            break;
        }
        if Instant::now() > deadline {
            bail!("maintenance {on} not reached by every node within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A node reports maintenance only once its scheduler has stopped: nothing to wait for.
    Ok(())
}

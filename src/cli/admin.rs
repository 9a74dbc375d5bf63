//! `cairn maintenance on|off|status`, `cairn export`, `cairn import FILE`: the operator's
//! commands for backing up, migrating and restoring the run service's data.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use cairn_client::http::Payload;
use clap::Subcommand;
use futures::StreamExt;

use super::args::{Connection, Output, ServerArgs};

#[derive(Subcommand, Debug)]
pub enum MaintenanceCommand {
    /// Ask every node to switch to maintenance (only maintenance, export and import
    /// answer; scheduling stops).
    On,
    /// Switch back.
    Off,
    /// Whether maintenance is asked for, and each node's current mode.
    Status,
}

pub async fn maintenance(cmd: MaintenanceCommand, args: ServerArgs) -> anyhow::Result<u8> {
    let conn = Connection::open(&args).await?;
    let result = async {
        match cmd {
            MaintenanceCommand::On => {
                conn.client.set_maintenance(true).await?;
                outln!("maintenance requested; `cairn maintenance status` shows when every node has switched")?;
            }
            MaintenanceCommand::Off => {
                conn.client.set_maintenance(false).await?;
                outln!("maintenance ended")?;
            }
            MaintenanceCommand::Status => {
                let st = conn.client.maintenance().await?;
                if args.output == Output::Json {
                    outln!("{}", serde_json::to_string_pretty(&st)?)?;
                } else {
                    outln!("maintenance {}", if st.requested { "requested" } else { "off" })?;
                    for n in &st.nodes {
                        outln!(
                            "node {:x}: {} since {}",
                            n.node_id,
                            if n.maintenance { "maintenance" } else { "serving" },
                            n.since.to_rfc3339()
                        )?;
                    }
                }
            }
        }
        Ok(0)
    }
    .await;
    conn.close().await;
    result
}

/// `cairn export [--include-secrets]`: the stream on stdout.
pub async fn export(args: ServerArgs, include_secrets: bool) -> anyhow::Result<u8> {
    let conn = Connection::open(&args).await?;
    let result = async {
        let mut stream = conn.client.export_with(include_secrets).await?;
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)?;
        }
        out.flush()?;
        Ok(0)
    }
    .await;
    conn.close().await;
    result
}

/// `cairn import FILE` (maintenance mode only).
pub async fn import(file: PathBuf, args: ServerArgs) -> anyhow::Result<u8> {
    let f = tokio::fs::File::open(&file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let conn = Connection::open(&args).await?;
    let result = async {
        let r = conn
            .client
            .import(Payload::stream(tokio_util::io::ReaderStream::new(f)))
            .await?;
        outln!("imported {} entries ({} runs)", r.entries, r.runs)?;
        Ok(0)
    }
    .await;
    conn.close().await;
    result
}

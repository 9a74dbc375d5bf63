//! `cairn executors list|delete`: the registered executors of a server (or of the
//! embedded node of `cairn run`), through `cairn-client` only.

use cairn_client::RunClient;
use cairn_client::api::ExecutorsResponse;
use clap::Subcommand;

use super::args::{Connection, Output, ServerArgs};
use super::terminal::Terminal;

#[derive(Subcommand, Debug)]
pub enum ExecutorsCommand {
    /// Registered executors and their load.
    List,
    /// Unregister an executor (its unfinished tasks are failed).
    Delete { id: String },
}

/// Runs a `cairn executors` command.
pub async fn executors(cmd: ExecutorsCommand, args: ServerArgs) -> anyhow::Result<u8> {
    let conn = Connection::open(&args).await?;
    let result = match cmd {
        ExecutorsCommand::List => list(&conn.client, args.output).await,
        ExecutorsCommand::Delete { id } => delete(&conn.client, &id).await,
    };
    conn.close().await;
    result
}

/// `cairn executors list`: a table, or the server's answer as JSON.
async fn list(client: &RunClient, output: Output) -> anyhow::Result<u8> {
    let list = client.executors().await?;
    if output == Output::Json {
        outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(0);
    }
    Terminal::new().table(
        &["ID", "ARCHS", "LABELS", "TASKS", "LAST HEARTBEAT"],
        &rows(&list),
    );
    Ok(0)
}

/// `cairn executors delete ID`.
async fn delete(client: &RunClient, id: &str) -> anyhow::Result<u8> {
    client.delete_executor(id).await?;
    outln!("executor {id} deleted")?;
    Ok(0)
}

/// One table row per executor: id, archs, labels, assigned/limit tasks (`-`: no
/// limit), last heartbeat.
fn rows(list: &ExecutorsResponse) -> Vec<Vec<String>> {
    list.executors
        .iter()
        .map(|e| {
            let archs: Vec<&str> = e.archs.iter().map(|a| a.as_str()).collect();
            let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                e.id.clone(),
                archs.join(","),
                labels.join(","),
                format!(
                    "{}/{}",
                    list.assigned.get(&e.id).copied().unwrap_or(0),
                    if e.active_tasks_limit == 0 {
                        "-".to_string()
                    } else {
                        e.active_tasks_limit.to_string()
                    }
                ),
                e.last_heartbeat.map(|t| t.to_rfc3339()).unwrap_or_default(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::executor::Executor;
    use cairn_client::runconfig::Arch;

    #[test]
    fn rows_show_assigned_over_limit_and_a_dash_for_no_limit() {
        let list = ExecutorsResponse {
            executors: vec![
                Executor {
                    id: "e1".into(),
                    archs: vec![Arch::Amd64, Arch::Arm64],
                    labels: [("os".to_string(), "linux".to_string())].into(),
                    active_tasks_limit: 4,
                    ..Executor::default()
                },
                Executor {
                    id: "e2".into(),
                    ..Executor::default()
                },
            ],
            assigned: [("e1".to_string(), 3)].into(),
        };
        assert_eq!(
            rows(&list),
            vec![
                vec!["e1", "amd64,arm64", "os=linux", "3/4", ""],
                vec!["e2", "", "", "0/-", ""],
            ]
        );
    }
}

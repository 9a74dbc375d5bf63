//! `cairn store serve|get|put|range|del|watch|cluster|snapshot|alarm`: the embedded key-value
//! store's commands. `serve` runs a store node (`main` starts it from [`ServeArgs`]); the
//! client commands ([`StoreClientCommand`]) talk to a node's etcd JSON API through
//! [`cairn_client::etcd`] only, one function each, their output on stdout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use cairn_client::etcd::{self as wire, B64Bytes, EtcdClient, I64};
use clap::{Args, Subcommand};

use super::args::{NetArgs, NodeArgs, TlsClientArgs};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Run a store node.
    Serve(Box<ServeArgs>),
    #[command(flatten)]
    Client(StoreClientCommand),
}

/// The options of `cairn store serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: super::ConfigArgs,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Cluster token: authenticates clients (unless --no-client-auth). Peers present the
    /// peer secret instead, derived from this token unless --peer-token-file.
    #[arg(long, env = "CAIRN_TOKEN")]
    pub token: String,
    /// A file holding the peer secret, which only nodes hold and present on /raft/rpc
    /// (default: DATA_DIR/peer-token, else derived from --token and kept there).
    #[arg(long, env = "CAIRN_PEER_TOKEN_FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// Serve clients without a token (loopback addresses only).
    #[arg(long, env = "CAIRN_NO_CLIENT_AUTH")]
    pub no_client_auth: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

/// How the client commands reach the store.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Store endpoints (comma separated base URLs).
    #[arg(
        long,
        env = "CAIRN_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Bearer token of the store's client port.
    #[arg(long, env = "CAIRN_TOKEN")]
    pub token: Option<String>,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<EtcdClient> {
        self.client_to(self.endpoints.clone(), Duration::from_secs(self.timeout))
    }

    fn client_to(&self, endpoints: Vec<String>, timeout: Duration) -> anyhow::Result<EtcdClient> {
        Ok(EtcdClient::with_tls(
            endpoints,
            self.token.clone(),
            timeout,
            &self.tls.client_tls(),
        )?)
    }
}

/// The store's client commands: every `cairn store` command but `serve`.
#[derive(Subcommand, Debug)]
pub enum StoreClientCommand {
    /// Print a key (or every key under a prefix).
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Read at this past revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Serve from the contacted node without a linearizability barrier.
        #[arg(long)]
        serializable: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a key.
    Put {
        key: String,
        value: String,
        /// Attach to this lease id.
        #[arg(long, default_value_t = 0)]
        lease: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print every key in [START, END) (END "\0" = to the end).
    Range {
        start: String,
        end: String,
        #[arg(long, default_value_t = 0)]
        limit: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key (or every key under a prefix).
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stream changes of a key (or prefix) as lines.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Start at this revision (default: changes from now on).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cluster membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Backups.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Store alarms (etcd's `alarm list|disarm`). While a NOSPACE alarm is active (a
    /// member over its --quota-bytes, or its disk full) every member refuses writes that
    /// may grow the store: puts, txns that put, lease grants. Reads, deletes, compaction
    /// and lease revocation go on. Free space, then disarm.
    Alarm {
        #[command(subcommand)]
        command: AlarmCommand,
    },
    /// Quorum-loss recovery (offline; the node must be stopped): make this surviving
    /// node's data the single member of a NEW cluster, keeping everything it had
    /// committed. The other members are dropped and must rejoin with empty data dirs
    /// (`--join`). Only for a cluster that lost its majority for good: see OPERATIONS.md.
    Recover(RecoverArgs),
}

#[derive(Subcommand, Debug)]
pub enum AlarmCommand {
    /// Print the active alarms, one `memberID:<hex> alarm:<kind>` line each.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Clear every active alarm whose cause is gone (a member's quota alarm stays while
    /// its data is over its quota: raise --quota-bytes and restart it first).
    Disarm {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members and each one's status.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a member by id (hex as printed by status, or decimal).
    Remove {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a learner (`--join --learner`) a voter, once it has caught up.
    Promote {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a voter a learner: it keeps its data and replicates, but no longer votes or
    /// counts toward quorum.
    Demote {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a consistent, checksummed backup of the store to FILE.
    Save {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Restore FILE into a new data dir (offline); start it with `serve --init`.
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "redb")]
        engine: store::EngineKind,
    },
}

/// `cairn store recover`: quorum-loss recovery, offline (etcd's `--force-new-cluster`).
#[derive(Args, Debug, Clone)]
pub struct RecoverArgs {
    /// The stopped survivor's data dir (of `cairn serve` or `cairn store serve`).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: PathBuf,
    #[arg(long, env = "CAIRN_ENGINE", default_value = "redb")]
    pub engine: store::EngineKind,
    /// The node's address in the new cluster (default: its address in the old one).
    #[arg(long, value_parser = member_url)]
    pub advertise: Option<String>,
}

/// A member's address as it goes into the membership: an `http://` or `https://` URL with
/// a host and nothing after the authority but an optional `/`.
fn member_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !plain {
        return Err("expected http(s)://HOST[:PORT], as a node is reached at".into());
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Runs a client command; output goes to stdout.
pub async fn run(cmd: StoreClientCommand) -> anyhow::Result<()> {
    match cmd {
        StoreClientCommand::Get {
            key,
            prefix,
            rev,
            serializable,
            client,
        } => get(&key, prefix, rev, serializable, &client).await,
        StoreClientCommand::Put {
            key,
            value,
            lease,
            client,
        } => put(&key, &value, lease, &client).await,
        StoreClientCommand::Range {
            start,
            end,
            limit,
            client,
        } => range(&start, &end, limit, &client).await,
        StoreClientCommand::Del {
            key,
            prefix,
            client,
        } => del(&key, prefix, &client).await,
        StoreClientCommand::Watch {
            key,
            prefix,
            rev,
            client,
        } => watch(&key, prefix, rev, &client).await,
        StoreClientCommand::Cluster {
            command: ClusterCommand::Status { client },
        } => cluster_status(&client).await,
        StoreClientCommand::Cluster {
            command: ClusterCommand::Remove { id, client },
        } => cluster_remove(&id, &client).await,
        StoreClientCommand::Cluster {
            command: ClusterCommand::Promote { id, client },
        } => cluster_role(&id, true, &client).await,
        StoreClientCommand::Cluster {
            command: ClusterCommand::Demote { id, client },
        } => cluster_role(&id, false, &client).await,
        StoreClientCommand::Snapshot {
            command: SnapshotCommand::Save { file, client },
        } => snapshot_save(&file, &client).await,
        StoreClientCommand::Snapshot {
            command:
                SnapshotCommand::Restore {
                    file,
                    data_dir,
                    engine,
                },
        } => snapshot_restore(&file, &data_dir, engine),
        StoreClientCommand::Alarm {
            command: AlarmCommand::List { client },
        } => alarm_list(&client).await,
        StoreClientCommand::Alarm {
            command: AlarmCommand::Disarm { client },
        } => alarm_disarm(&client).await,
        StoreClientCommand::Recover(args) => recover(&args).await,
    }
}

fn alarm_line(a: &wire::AlarmMember) -> String {
    format!("memberID:{:x} alarm:{}", a.member_id.0, a.alarm)
}

/// `cairn store alarm list`.
async fn alarm_list(client: &ClientArgs) -> anyhow::Result<()> {
    let resp = client
        .client()?
        .alarm(&wire::AlarmRequest::default())
        .await
        .map_err(remote)?;
    for a in &resp.alarms {
        outln!("{}", alarm_line(a))?;
    }
    Ok(())
}

/// `cairn store alarm disarm`: deactivates each active alarm (as etcdctl does), printing
/// each one cleared; fails naming those whose cause remains.
async fn alarm_disarm(client: &ClientArgs) -> anyhow::Result<()> {
    let c = client.client()?;
    let active = c
        .alarm(&wire::AlarmRequest::default())
        .await
        .map_err(remote)?;
    let mut refused = Vec::new();
    for a in &active.alarms {
        let req = wire::AlarmRequest {
            action: "DEACTIVATE".into(),
            member_id: a.member_id,
            alarm: a.alarm.clone(),
        };
        match c.alarm(&req).await {
            Ok(_) => outln!("{}", alarm_line(a))?,
            Err(e) => refused.push(format!("{}: {e}", alarm_line(a))),
        }
    }
    if !refused.is_empty() {
        bail!("not disarmed:\n{}", refused.join("\n"));
    }
    Ok(())
}

/// `cairn store get`: the key, or every key under it with `--prefix`.
async fn get(
    key: &str,
    prefix: bool,
    rev: i64,
    serializable: bool,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let req = wire::RangeRequest {
        key: b64(key),
        range_end: range_end_for(key, prefix),
        revision: I64(rev),
        serializable,
        ..Default::default()
    };
    let resp = client.client()?.range(&req).await.map_err(remote)?;
    print_kvs(&resp.kvs)?;
    Ok(())
}

/// `cairn store put`: prints the write's revision.
async fn put(key: &str, value: &str, lease: i64, client: &ClientArgs) -> anyhow::Result<()> {
    let req = wire::PutRequest {
        key: b64(key),
        value: b64(value),
        lease: I64(lease),
        ..Default::default()
    };
    let resp = client.client()?.put(&req).await.map_err(remote)?;
    outln!("OK (revision {})", resp.header.revision.0)?;
    Ok(())
}

/// `cairn store range START END`.
async fn range(start: &str, end: &str, limit: i64, client: &ClientArgs) -> anyhow::Result<()> {
    let req = wire::RangeRequest {
        key: b64(start),
        range_end: B64Bytes(range_end_arg(end)),
        limit: I64(limit),
        ..Default::default()
    };
    let resp = client.client()?.range(&req).await.map_err(remote)?;
    print_kvs(&resp.kvs)?;
    Ok(())
}

/// `cairn store del`: prints how many keys went.
async fn del(key: &str, prefix: bool, client: &ClientArgs) -> anyhow::Result<()> {
    let req = wire::DeleteRangeRequest {
        key: b64(key),
        range_end: range_end_for(key, prefix),
        prev_kv: false,
    };
    let resp = client.client()?.delete_range(&req).await.map_err(remote)?;
    outln!("{}", resp.deleted.0)?;
    Ok(())
}

/// `cairn store watch`: one line per event until the stream ends; a cancelled watch is
/// an error.
async fn watch(key: &str, prefix: bool, rev: i64, client: &ClientArgs) -> anyhow::Result<()> {
    let req = wire::WatchCreateRequest {
        key: b64(key),
        range_end: range_end_for(key, prefix),
        start_revision: I64(rev),
        ..Default::default()
    };
    let mut stream = client.client()?.watch(&req).await.map_err(remote)?;
    while let Some(msg) = stream.next().await.map_err(remote)? {
        if msg.canceled {
            bail!("watch cancelled: {}", msg.cancel_reason);
        }
        for ev in msg.events {
            outln!(
                "{} {} {} (revision {})",
                ev.kind.as_str(),
                show(&ev.kv.key),
                show(&ev.kv.value),
                msg.header.revision.0
            )?;
        }
    }
    Ok(())
}

/// `cairn store cluster status`: a table of the members, each asked for its own status.
async fn cluster_status(client: &ClientArgs) -> anyhow::Result<()> {
    let members = client.client()?.member_list().await.map_err(remote)?;
    outln!(
        "{:<16} {:<8} {:<28} {:>8} {:>10} {:>10}",
        "ID",
        "ROLE",
        "URL",
        "TERM",
        "APPLIED",
        "REVISION"
    )?;
    for m in members.members {
        let url = m.client_urls.first().cloned().unwrap_or_default();
        let one = client.client_to(vec![url.clone()], Duration::from_secs(3))?;
        match one.status().await {
            Ok(st) => {
                let role = if st.leader.0 == m.id.0 {
                    "leader"
                } else if m.is_learner {
                    "learner"
                } else {
                    "follower"
                };
                outln!(
                    "{:<16x} {:<8} {:<28} {:>8} {:>10} {:>10}",
                    m.id.0,
                    role,
                    url,
                    st.raft_term.0,
                    st.raft_applied_index.0,
                    st.header.revision.0
                )?;
            }
            Err(e) => outln!("{:<16x} {:<8} {:<28} unreachable: {e}", m.id.0, "?", url)?,
        }
    }
    Ok(())
}

/// `cairn store cluster remove ID`.
async fn cluster_remove(id: &str, client: &ClientArgs) -> anyhow::Result<()> {
    let parsed = member_id(id)?;
    let req = wire::MemberRemoveRequest {
        id: I64(parsed as i64),
    };
    client.client()?.member_remove(&req).await.map_err(remote)?;
    outln!("removed member {parsed:x}")?;
    Ok(())
}

/// `cairn store cluster promote|demote ID`.
async fn cluster_role(id: &str, voter: bool, client: &ClientArgs) -> anyhow::Result<()> {
    let parsed = member_id(id)?;
    let req = wire::MemberRemoveRequest {
        id: I64(parsed as i64),
    };
    // Promotion waits for the learner to catch up: give it time.
    let c = client.client_to(
        client.endpoints.clone(),
        Duration::from_secs(client.timeout.max(60)),
    )?;
    if voter {
        c.member_promote(&req).await.map_err(remote)?;
        outln!("promoted member {parsed:x} to voter")?;
    } else {
        c.member_demote(&req).await.map_err(remote)?;
        outln!("demoted member {parsed:x} to learner")?;
    }
    Ok(())
}

/// `cairn store snapshot save FILE`: written to `FILE.part`, checked, then renamed.
async fn snapshot_save(file: &Path, client: &ClientArgs) -> anyhow::Result<()> {
    let tmp = file.with_extension("part");
    let (h, len) = save_snapshot(&client.client()?, &tmp)
        .await
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    outln!(
        "saved revision {} ({} bytes) to {}",
        h.revision,
        len,
        file.display()
    )?;
    Ok(())
}

/// `cairn store snapshot restore FILE --data-dir DIR` (offline).
fn snapshot_restore(file: &Path, data_dir: &Path, engine: store::EngineKind) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let h = raft::backup::restore(&bytes, data_dir, engine)?;
    outln!(
        "restored revision {} into {}; start it with `cairn store serve --init --data-dir {}`",
        h.revision,
        data_dir.display(),
        data_dir.display()
    )?;
    Ok(())
}

/// `cairn store recover --data-dir DIR`: warns on stderr, recovers, says what it kept,
/// what it dropped and what to do next.
async fn recover(args: &RecoverArgs) -> anyhow::Result<()> {
    eprintln!(
        "WARNING: recovering {} as the only member of a NEW cluster. Use this only when the \
         cluster lost its majority for good: writes the other members committed and this \
         one never received are lost, and the old members must rejoin with empty data dirs.",
        args.data_dir.display()
    );
    let r = raft::recover::recover(
        &args.data_dir,
        args.engine,
        args.advertise.clone(),
        raft::Timing::lan(),
    )
    .await
    .with_context(|| format!("recovering {}", args.data_dir.display()))?;
    outln!(
        "recovered node {:x} at {} as the only member of cluster {:x} (was {:x}), at revision {}",
        r.node_id,
        r.addr,
        r.new_cluster_id,
        r.old_cluster_id,
        r.revision
    )?;
    outln!(
        "log entries applied now: {} ({} of them past the commit index last recorded on disk)",
        r.applied_from_log,
        r.past_recorded_commit
    )?;
    for (id, addr) in &r.dropped_members {
        outln!(
            "dropped member {id:x} ({addr}): wipe its data dir and start it with --join {}",
            r.addr
        )?;
    }
    outln!("next: start this node as before, without --init or --join")?;
    Ok(())
}

fn b64(s: &str) -> B64Bytes {
    B64Bytes(s.as_bytes().to_vec())
}

fn show(b: &B64Bytes) -> String {
    String::from_utf8_lossy(&b.0).into_owned()
}

/// The range end for a key, or for every key under it with `--prefix`.
fn range_end_for(key: &str, prefix: bool) -> B64Bytes {
    if prefix {
        B64Bytes(wire::prefix_end(key.as_bytes()))
    } else {
        B64Bytes::default()
    }
}

/// The END argument of `range` as bytes: the two characters `\0` mean the zero byte (to
/// the end of the key space).
fn range_end_arg(end: &str) -> Vec<u8> {
    if end == "\\0" {
        vec![0]
    } else {
        end.as_bytes().to_vec()
    }
}

/// A member id as printed by `cluster status` (hex, `0x` optional), else decimal.
fn member_id(id: &str) -> anyhow::Result<u64> {
    u64::from_str_radix(id.trim_start_matches("0x"), 16)
        .or_else(|_| id.parse::<u64>())
        .map_err(|_| {
            anyhow!("invalid member id {id:?} (expected hex as printed by `cluster status`)")
        })
}

/// Key and value on lines of their own, as etcdctl prints them.
fn print_kvs(kvs: &[wire::KeyValue]) -> std::io::Result<()> {
    for kv in kvs {
        outln!("{}\n{}", show(&kv.key), show(&kv.value))?;
    }
    Ok(())
}

fn remote(e: wire::EtcdError) -> anyhow::Error {
    anyhow!("{e}")
}

/// Streams a backup into `tmp` and checks that it is one: its header (a few dozen bytes at
/// the front) must parse. Returns the header and the backup's length.
async fn save_snapshot(
    client: &EtcdClient,
    tmp: &Path,
) -> anyhow::Result<(raft::backup::BackupHeader, u64)> {
    use std::io::Read as _;

    let writing = || format!("writing {}", tmp.display());
    let mut out =
        tokio::io::BufWriter::new(tokio::fs::File::create(tmp).await.with_context(writing)?);
    let len = client.snapshot(&mut out).await.map_err(remote)?;
    out.into_inner().sync_all().await.with_context(writing)?;
    let mut front = Vec::new();
    std::fs::File::open(tmp)
        .with_context(|| format!("reading {}", tmp.display()))?
        .take(64 << 10)
        .read_to_end(&mut front)
        .with_context(|| format!("reading {}", tmp.display()))?;
    let (h, _) = raft::backup::header(&front)?;
    Ok((h, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovered_nodes_new_address_is_a_plain_http_url() {
        assert_eq!(
            member_url("https://n1.example:7070/").as_deref(),
            Ok("https://n1.example:7070")
        );
        assert_eq!(
            member_url("http://10.0.0.1:7070").as_deref(),
            Ok("http://10.0.0.1:7070")
        );
        for hostile in [
            "file:///etc/passwd",
            "http://u:p@n1:7070",
            "http://n1:7070/raft/rpc",
            "http://n1:7070/?x=1",
            "n1:7070",
            "",
        ] {
            assert!(member_url(hostile).is_err(), "{hostile:?} accepted");
        }
    }

    #[test]
    fn member_ids_are_hex_as_printed_else_decimal() {
        assert_eq!(member_id("ff").expect("hex"), 0xff);
        assert_eq!(member_id("0x1a").expect("0x hex"), 0x1a);
        // Digits only read as hex first, as before.
        assert_eq!(member_id("10").expect("hex digits"), 0x10);
        assert!(member_id("node-1").is_err());
    }

    #[test]
    fn range_end_backslash_zero_means_the_end_of_the_key_space() {
        assert_eq!(range_end_arg("\\0"), vec![0]);
        assert_eq!(range_end_arg("b"), b"b".to_vec());
    }

    #[test]
    fn prefix_range_end_covers_the_prefix_only() {
        assert_eq!(range_end_for("a", false), B64Bytes::default());
        assert_eq!(range_end_for("a", true), B64Bytes(b"b".to_vec()));
    }
}
